//! The sandbox's seccomp policy (see docs/isolation.md, "seccomp"): an **allowlist** modelled on
//! Docker's default profile. Anything not listed fails with ENOSYS, as on a kernel without it
//! (so new kernel syscalls stay closed until reviewed, and libc falls back where it can: clone3 →
//! clone, whose flags a classic filter can inspect). Syscalls that exist but a sandbox may not use
//! fail with EPERM, like Docker's.
//!
//! The policy is **one** classic BPF program (written here, not by seccompiler, whose filters have
//! a single match action, which made it four filters). Its decisions:
//! - [`ALLOWED`] → allow; [`REFUSED`] → EPERM; any other number → ENOSYS;
//! - `clone` with a `CLONE_NEW*` flag → EPERM, `personality` outside [`PERSONAS`] → EPERM;
//! - `socket` of a family outside [`SOCKET_FAMILIES`] and `socketpair` of one outside
//!   [`SOCKETPAIR_FAMILIES`] → EAFNOSUPPORT;
//! - `AF_NETLINK` sockets of a protocol outside [`NETLINK_PROTOCOLS`] → EPROTONOSUPPORT.
//!
//! The syscall number is looked up by binary search over ranges of numbers with the same
//! decision (~15 instructions), not by comparing it with every listed number in turn (~400, the
//! seccompiler allowlist). That matters beyond the syscalls the kernel's seccomp cache does not
//! cover: when a filter is attached the kernel emulates it once for every syscall number to
//! fill that cache, and CRIU attaches every filter again for every restored task. With the four
//! linear filters that was ~1.5-2 ms of CPU per task in each deep-standby restore.
//!
//! The process is killed when the syscall's architecture is not x86_64 (i386 through
//! `int 0x80`); x32 numbers (bit 30 set) are in no list, so ENOSYS.

use crate::sys::{LaunchError, Result, check};

// x86_64 numbers the libc crate does not name (arch/x86/entry/syscalls/syscall_64.tbl).
const SYS_IO_PGETEVENTS: libc::c_long = 333;
const SYS_CACHESTAT: libc::c_long = 451;
const SYS_MAP_SHADOW_STACK: libc::c_long = 453;
const SYS_FUTEX_WAKE: libc::c_long = 454;
const SYS_FUTEX_WAIT: libc::c_long = 455;
const SYS_FUTEX_REQUEUE: libc::c_long = 456;

/// Allowed without conditions: Docker's default list for x86_64 (its `CAP_SYS_CHROOT`,
/// `ptrace` and amd64 groups included, as sandboxes keep those capabilities and that kernel
/// version), minus what [`REFUSED`] takes out, plus the syscalls of kernels 6.5–6.10 that only
/// touch the caller's own state (fchmodat2, cachestat, map_shadow_stack, futex2, mseal).
pub const ALLOWED: &[(&str, libc::c_long)] = &[
    // Files and directories
    ("access", libc::SYS_access),
    ("chdir", libc::SYS_chdir),
    ("chmod", libc::SYS_chmod),
    ("chown", libc::SYS_chown),
    ("chroot", libc::SYS_chroot),
    ("close", libc::SYS_close),
    ("close_range", libc::SYS_close_range),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("creat", libc::SYS_creat),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("fadvise64", libc::SYS_fadvise64),
    ("fallocate", libc::SYS_fallocate),
    ("fchdir", libc::SYS_fchdir),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("fchmodat2", libc::SYS_fchmodat2),
    ("fchown", libc::SYS_fchown),
    ("fchownat", libc::SYS_fchownat),
    ("fcntl", libc::SYS_fcntl),
    ("fdatasync", libc::SYS_fdatasync),
    ("flock", libc::SYS_flock),
    ("fstat", libc::SYS_fstat),
    ("fstatfs", libc::SYS_fstatfs),
    ("fsync", libc::SYS_fsync),
    ("ftruncate", libc::SYS_ftruncate),
    ("futimesat", libc::SYS_futimesat),
    ("getcwd", libc::SYS_getcwd),
    ("getdents", libc::SYS_getdents),
    ("getdents64", libc::SYS_getdents64),
    ("ioctl", libc::SYS_ioctl),
    ("lchown", libc::SYS_lchown),
    ("link", libc::SYS_link),
    ("linkat", libc::SYS_linkat),
    ("lseek", libc::SYS_lseek),
    ("lstat", libc::SYS_lstat),
    ("mkdir", libc::SYS_mkdir),
    ("mkdirat", libc::SYS_mkdirat),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("newfstatat", libc::SYS_newfstatat),
    ("open", libc::SYS_open),
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("pipe", libc::SYS_pipe),
    ("pipe2", libc::SYS_pipe2),
    ("pread64", libc::SYS_pread64),
    ("preadv", libc::SYS_preadv),
    ("preadv2", libc::SYS_preadv2),
    ("pwrite64", libc::SYS_pwrite64),
    ("pwritev", libc::SYS_pwritev),
    ("pwritev2", libc::SYS_pwritev2),
    ("read", libc::SYS_read),
    ("readahead", libc::SYS_readahead),
    ("readlink", libc::SYS_readlink),
    ("readlinkat", libc::SYS_readlinkat),
    ("readv", libc::SYS_readv),
    ("rename", libc::SYS_rename),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("rmdir", libc::SYS_rmdir),
    ("sendfile", libc::SYS_sendfile),
    ("splice", libc::SYS_splice),
    ("stat", libc::SYS_stat),
    ("statfs", libc::SYS_statfs),
    ("statx", libc::SYS_statx),
    ("symlink", libc::SYS_symlink),
    ("symlinkat", libc::SYS_symlinkat),
    ("sync", libc::SYS_sync),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("syncfs", libc::SYS_syncfs),
    ("tee", libc::SYS_tee),
    ("truncate", libc::SYS_truncate),
    ("umask", libc::SYS_umask),
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
    ("utime", libc::SYS_utime),
    ("utimensat", libc::SYS_utimensat),
    ("utimes", libc::SYS_utimes),
    ("vmsplice", libc::SYS_vmsplice),
    ("write", libc::SYS_write),
    ("writev", libc::SYS_writev),
    // Extended attributes
    ("fgetxattr", libc::SYS_fgetxattr),
    ("flistxattr", libc::SYS_flistxattr),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("getxattr", libc::SYS_getxattr),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("removexattr", libc::SYS_removexattr),
    ("setxattr", libc::SYS_setxattr),
    // File events, polling, async I/O (not io_uring)
    ("epoll_create", libc::SYS_epoll_create),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("eventfd", libc::SYS_eventfd),
    ("eventfd2", libc::SYS_eventfd2),
    ("fanotify_mark", libc::SYS_fanotify_mark),
    ("inotify_add_watch", libc::SYS_inotify_add_watch),
    ("inotify_init", libc::SYS_inotify_init),
    ("inotify_init1", libc::SYS_inotify_init1),
    ("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    ("io_cancel", libc::SYS_io_cancel),
    ("io_destroy", libc::SYS_io_destroy),
    ("io_getevents", libc::SYS_io_getevents),
    ("io_pgetevents", SYS_IO_PGETEVENTS),
    ("io_setup", libc::SYS_io_setup),
    ("io_submit", libc::SYS_io_submit),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("pselect6", libc::SYS_pselect6),
    ("select", libc::SYS_select),
    ("signalfd", libc::SYS_signalfd),
    ("signalfd4", libc::SYS_signalfd4),
    ("timerfd_create", libc::SYS_timerfd_create),
    ("timerfd_gettime", libc::SYS_timerfd_gettime),
    ("timerfd_settime", libc::SYS_timerfd_settime),
    // Memory
    ("brk", libc::SYS_brk),
    ("cachestat", SYS_CACHESTAT),
    ("madvise", libc::SYS_madvise),
    ("map_shadow_stack", SYS_MAP_SHADOW_STACK),
    ("membarrier", libc::SYS_membarrier),
    ("memfd_create", libc::SYS_memfd_create),
    ("memfd_secret", libc::SYS_memfd_secret),
    ("mincore", libc::SYS_mincore),
    ("mlock", libc::SYS_mlock),
    ("mlock2", libc::SYS_mlock2),
    ("mlockall", libc::SYS_mlockall),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("mremap", libc::SYS_mremap),
    ("msync", libc::SYS_msync),
    ("munlock", libc::SYS_munlock),
    ("munlockall", libc::SYS_munlockall),
    ("munmap", libc::SYS_munmap),
    ("mseal", libc::SYS_mseal),
    ("pkey_alloc", libc::SYS_pkey_alloc),
    ("pkey_free", libc::SYS_pkey_free),
    ("pkey_mprotect", libc::SYS_pkey_mprotect),
    ("remap_file_pages", libc::SYS_remap_file_pages),
    // Processes, threads, signals
    ("arch_prctl", libc::SYS_arch_prctl),
    ("capget", libc::SYS_capget),
    ("capset", libc::SYS_capset),
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("fork", libc::SYS_fork),
    ("get_robust_list", libc::SYS_get_robust_list),
    ("get_thread_area", libc::SYS_get_thread_area),
    ("getcpu", libc::SYS_getcpu),
    ("getegid", libc::SYS_getegid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getgroups", libc::SYS_getgroups),
    ("getitimer", libc::SYS_getitimer),
    ("getpgid", libc::SYS_getpgid),
    ("getpgrp", libc::SYS_getpgrp),
    ("getpid", libc::SYS_getpid),
    ("getppid", libc::SYS_getppid),
    ("getpriority", libc::SYS_getpriority),
    ("getresgid", libc::SYS_getresgid),
    ("getresuid", libc::SYS_getresuid),
    ("getrlimit", libc::SYS_getrlimit),
    ("getrusage", libc::SYS_getrusage),
    ("getsid", libc::SYS_getsid),
    ("gettid", libc::SYS_gettid),
    ("getuid", libc::SYS_getuid),
    ("ioprio_get", libc::SYS_ioprio_get),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("kill", libc::SYS_kill),
    ("landlock_add_rule", libc::SYS_landlock_add_rule),
    ("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    ("modify_ldt", libc::SYS_modify_ldt),
    ("pause", libc::SYS_pause),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("prctl", libc::SYS_prctl),
    ("prlimit64", libc::SYS_prlimit64),
    ("process_mrelease", libc::SYS_process_mrelease),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("rseq", libc::SYS_rseq),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigpending", libc::SYS_rt_sigpending),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    ("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    ("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_getattr", libc::SYS_sched_getattr),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    ("sched_setaffinity", libc::SYS_sched_setaffinity),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_yield", libc::SYS_sched_yield),
    ("seccomp", libc::SYS_seccomp),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("set_thread_area", libc::SYS_set_thread_area),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("setfsgid", libc::SYS_setfsgid),
    ("setfsuid", libc::SYS_setfsuid),
    ("setgid", libc::SYS_setgid),
    ("setgroups", libc::SYS_setgroups),
    ("setitimer", libc::SYS_setitimer),
    ("setpgid", libc::SYS_setpgid),
    ("setpriority", libc::SYS_setpriority),
    ("setregid", libc::SYS_setregid),
    ("setresgid", libc::SYS_setresgid),
    ("setresuid", libc::SYS_setresuid),
    ("setreuid", libc::SYS_setreuid),
    ("setrlimit", libc::SYS_setrlimit),
    ("setsid", libc::SYS_setsid),
    ("setuid", libc::SYS_setuid),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("tgkill", libc::SYS_tgkill),
    ("tkill", libc::SYS_tkill),
    ("vfork", libc::SYS_vfork),
    ("wait4", libc::SYS_wait4),
    ("waitid", libc::SYS_waitid),
    // Time
    ("alarm", libc::SYS_alarm),
    ("clock_getres", libc::SYS_clock_getres),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("nanosleep", libc::SYS_nanosleep),
    ("time", libc::SYS_time),
    ("timer_create", libc::SYS_timer_create),
    ("timer_delete", libc::SYS_timer_delete),
    ("timer_getoverrun", libc::SYS_timer_getoverrun),
    ("timer_gettime", libc::SYS_timer_gettime),
    ("timer_settime", libc::SYS_timer_settime),
    ("times", libc::SYS_times),
    // Futexes
    ("futex", libc::SYS_futex),
    ("futex_requeue", SYS_FUTEX_REQUEUE),
    ("futex_wait", SYS_FUTEX_WAIT),
    ("futex_waitv", libc::SYS_futex_waitv),
    ("futex_wake", SYS_FUTEX_WAKE),
    // IPC
    ("mq_getsetattr", libc::SYS_mq_getsetattr),
    ("mq_notify", libc::SYS_mq_notify),
    ("mq_open", libc::SYS_mq_open),
    ("mq_timedreceive", libc::SYS_mq_timedreceive),
    ("mq_timedsend", libc::SYS_mq_timedsend),
    ("mq_unlink", libc::SYS_mq_unlink),
    ("msgctl", libc::SYS_msgctl),
    ("msgget", libc::SYS_msgget),
    ("msgrcv", libc::SYS_msgrcv),
    ("msgsnd", libc::SYS_msgsnd),
    ("semctl", libc::SYS_semctl),
    ("semget", libc::SYS_semget),
    ("semop", libc::SYS_semop),
    ("semtimedop", libc::SYS_semtimedop),
    ("shmat", libc::SYS_shmat),
    ("shmctl", libc::SYS_shmctl),
    ("shmdt", libc::SYS_shmdt),
    ("shmget", libc::SYS_shmget),
    // Sockets (socket/socketpair family-filtered below)
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
    ("bind", libc::SYS_bind),
    ("connect", libc::SYS_connect),
    ("getpeername", libc::SYS_getpeername),
    ("getsockname", libc::SYS_getsockname),
    ("getsockopt", libc::SYS_getsockopt),
    ("listen", libc::SYS_listen),
    ("recvfrom", libc::SYS_recvfrom),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("sendto", libc::SYS_sendto),
    ("setsockopt", libc::SYS_setsockopt),
    ("shutdown", libc::SYS_shutdown),
    // System information
    ("getrandom", libc::SYS_getrandom),
    ("sysinfo", libc::SYS_sysinfo),
    ("uname", libc::SYS_uname),
];

/// Syscalls that exist but a sandbox may not use: EPERM.
pub const REFUSED: &[(&str, libc::c_long)] = &[
    // The kernel's global state: modules, kexec, reboot, swap, accounting, clock, kernel log.
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("syslog", libc::SYS_syslog),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("vhangup", libc::SYS_vhangup),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    // Large kernel attack surface with an exploit record.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("fanotify_init", libc::SYS_fanotify_init),
    // File handles bypass path permissions.
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // Mounts and namespaces: the sandbox's layout is fixed by its launcher.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    // Inspecting or steering other processes beyond ptrace's rules (Docker: CAP_SYS_PTRACE).
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("process_madvise", libc::SYS_process_madvise),
    // NUMA placement (Docker: CAP_SYS_NICE).
    ("mbind", libc::SYS_mbind),
    ("set_mempolicy", libc::SYS_set_mempolicy),
    ("get_mempolicy", libc::SYS_get_mempolicy),
    ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
    ("move_pages", libc::SYS_move_pages),
    ("migrate_pages", libc::SYS_migrate_pages),
];

/// clone flags that create namespaces (CLONE_NEWTIME only exists for clone3/unshare).
const CLONE_NEW_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// `personality(2)` arguments allowed (Docker's): PER_LINUX, PER_LINUX32 (`setarch linux32`),
/// UNAME26, UNAME26 | PER_LINUX32, and 0xffffffff (query). Everything else is EPERM, including
/// READ_IMPLIES_EXEC and ADDR_NO_RANDOMIZE (so gdb cannot turn ASLR off, as under Docker).
pub const PERSONAS: [u32; 5] = [0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// Socket families a sandbox may create: Unix, IPv4 (incl. raw ICMP for ping with CAP_NET_RAW),
/// IPv6 (programs open v6 sockets even where the firewall drops v6) and netlink (protocols below).
/// All others fail with EAFNOSUPPORT, like a kernel without them: AF_VSOCK (the VM's host port
/// space, past veth and nftables), AF_PACKET (raw frames; the exploit record behind Kubernetes
/// advice to drop NET_RAW), AF_ALG, and the rarely built families (TIPC, RDS, X.25, CAN, ...)
/// the kernel would load modules for.
pub const SOCKET_FAMILIES: [libc::c_int; 4] = [
    libc::AF_UNIX,
    libc::AF_INET,
    libc::AF_INET6,
    libc::AF_NETLINK,
];

/// `socketpair(2)` only makes sense for AF_UNIX.
pub const SOCKETPAIR_FAMILIES: [libc::c_int; 1] = [libc::AF_UNIX];

/// Netlink protocols a sandbox may open: ROUTE (`ip`, getifaddrs), SOCK_DIAG (`ss`) and AUDIT
/// (sudo, login and useradd log through it; the kernel refuses non-initial namespaces). Others
/// (GENERIC and its families, NETFILTER, XFRM, uevents, ...) fail with EPROTONOSUPPORT.
pub const NETLINK_PROTOCOLS: [libc::c_int; 3] = [
    libc::NETLINK_ROUTE,
    libc::NETLINK_SOCK_DIAG,
    libc::NETLINK_AUDIT,
];

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Offsets in `struct seccomp_data`: the syscall number, the architecture, and the low 32 bits
/// of argument `i` at `ARGS + 8 * i` (little endian).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;
/// The kernel's limit on a program's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// What the filter decides from the syscall number alone, or where it looks further.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ByNumber {
    Allow,
    Errno(i32),
    Clone,
    Personality,
    Socket,
    Socketpair,
}

/// Ranges `[start, next start)` of syscall numbers with one decision, from 0 to `u32::MAX`.
fn number_ranges() -> Vec<(u32, ByNumber)> {
    let mut by_nr: std::collections::BTreeMap<u32, ByNumber> = ALLOWED
        .iter()
        .map(|(_, nr)| (*nr as u32, ByNumber::Allow))
        .chain(
            REFUSED
                .iter()
                .map(|(_, nr)| (*nr as u32, ByNumber::Errno(libc::EPERM))),
        )
        .collect();
    for (nr, by) in [
        (libc::SYS_clone, ByNumber::Clone),
        (libc::SYS_personality, ByNumber::Personality),
        (libc::SYS_socket, ByNumber::Socket),
        (libc::SYS_socketpair, ByNumber::Socketpair),
    ] {
        by_nr.insert(nr as u32, by);
    }
    let enosys = ByNumber::Errno(libc::ENOSYS);
    let mut ranges: Vec<(u32, ByNumber)> = Vec::new();
    let mut push = |start: u32, by: ByNumber| {
        if ranges.last().is_none_or(|(_, last)| *last != by) {
            ranges.push((start, by));
        }
    };
    let mut next = 0u32;
    for (nr, by) in by_nr {
        if nr > next {
            push(next, enosys);
        }
        push(nr, by);
        next = nr + 1;
    }
    push(next, enosys);
    ranges
}

/// A jump target of [`Asm`].
#[derive(Clone, Copy)]
struct Label(usize);

/// A minimal classic-BPF assembler with forward labels.
#[derive(Default)]
struct Asm {
    code: Vec<libc::sock_filter>,
    /// Where each label is, once placed.
    labels: Vec<Option<usize>>,
    /// (instruction, label): a `ja` (32-bit offset) or a conditional's `jt` (8 bits).
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn emit(&mut self, code: u32, k: u32, jt: u8, jf: u8) {
        self.code.push(libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        });
    }

    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn place(&mut self, label: Label) {
        self.labels[label.0] = Some(self.code.len());
    }

    fn load(&mut self, offset: u32) {
        self.emit(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset, 0, 0);
    }

    fn ret(&mut self, action: u32) {
        self.emit(libc::BPF_RET | libc::BPF_K, action, 0, 0);
    }

    fn jump_to(&mut self, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.emit(libc::BPF_JMP | libc::BPF_JA | libc::BPF_K, 0, 0, 0);
    }

    /// To `to` if A == k, else on.
    fn jeq_to(&mut self, k: u32, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.emit(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k, 0, 0);
    }

    /// To `to` if A & k != 0, else on.
    fn jset_to(&mut self, k: u32, to: Label) {
        self.fixups.push((self.code.len(), to));
        self.emit(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, k, 0, 0);
    }

    fn finish(mut self) -> std::result::Result<Vec<libc::sock_filter>, String> {
        for (at, label) in std::mem::take(&mut self.fixups) {
            let to = self.labels[label.0].ok_or("a label was never placed")?;
            let offset = to
                .checked_sub(at + 1)
                .ok_or("a backward jump (classic BPF only jumps forward)")?;
            let insn = &mut self.code[at];
            if insn.code == (libc::BPF_JMP | libc::BPF_JA | libc::BPF_K) as u16 {
                insn.k = offset as u32;
            } else {
                insn.jt = u8::try_from(offset).map_err(|_| "a conditional jump beyond 255")?;
            }
        }
        if self.code.len() > MAX_INSNS {
            return Err(format!("{} instructions", self.code.len()));
        }
        Ok(self.code)
    }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// Binary search of A (the syscall number) over `ranges`, each leaf returning or jumping to
/// the block of its [`ByNumber`].
fn search(asm: &mut Asm, ranges: &[(u32, ByNumber)], blocks: &[(ByNumber, Label)]) {
    if let [(_, by)] = ranges {
        match by {
            ByNumber::Allow => asm.ret(libc::SECCOMP_RET_ALLOW),
            ByNumber::Errno(e) => asm.ret(errno(*e)),
            special => {
                let (_, block) = blocks
                    .iter()
                    .find(|(b, _)| b == special)
                    .expect("every special number has a block");
                asm.jump_to(*block);
            }
        }
        return;
    }
    let mid = ranges.len() / 2;
    let upper = asm.label();
    // A >= start of the upper half: on to the `ja` (any distance), else over it.
    asm.emit(
        libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
        ranges[mid].0,
        0,
        1,
    );
    asm.jump_to(upper);
    search(asm, &ranges[..mid], blocks);
    asm.place(upper);
    search(asm, &ranges[mid..], blocks);
}

/// The policy as one program (see the module doc).
fn compile() -> std::result::Result<Vec<libc::sock_filter>, String> {
    let mut asm = Asm::default();
    let allow = asm.label();
    let blocks: Vec<(ByNumber, Label)> = [
        ByNumber::Clone,
        ByNumber::Personality,
        ByNumber::Socket,
        ByNumber::Socketpair,
    ]
    .into_iter()
    .map(|by| (by, asm.label()))
    .collect();
    let block = |by: ByNumber| blocks.iter().find(|(b, _)| *b == by).unwrap().1;
    let arg = |i: u32| DATA_ARGS + 8 * i;

    asm.load(DATA_ARCH);
    asm.emit(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        AUDIT_ARCH_X86_64,
        1,
        0,
    );
    asm.ret(libc::SECCOMP_RET_KILL_PROCESS);
    asm.load(DATA_NR);
    search(&mut asm, &number_ranges(), &blocks);

    // clone(flags, ...): the namespace flags are all in the low 32 bits.
    asm.place(block(ByNumber::Clone));
    let refused = asm.label();
    asm.load(arg(0));
    let new_ns = CLONE_NEW_FLAGS.iter().fold(0u32, |m, f| m | *f as u32);
    asm.jset_to(new_ns, refused);
    asm.ret(libc::SECCOMP_RET_ALLOW);
    asm.place(refused);
    asm.ret(errno(libc::EPERM));

    asm.place(block(ByNumber::Personality));
    asm.load(arg(0));
    for persona in PERSONAS {
        asm.jeq_to(persona, allow);
    }
    asm.ret(errno(libc::EPERM));

    asm.place(block(ByNumber::Socket));
    let netlink = asm.label();
    asm.load(arg(0));
    asm.jeq_to(libc::AF_NETLINK as u32, netlink);
    for family in SOCKET_FAMILIES {
        asm.jeq_to(family as u32, allow);
    }
    asm.ret(errno(libc::EAFNOSUPPORT));
    asm.place(netlink);
    asm.load(arg(2));
    for protocol in NETLINK_PROTOCOLS {
        asm.jeq_to(protocol as u32, allow);
    }
    asm.ret(errno(libc::EPROTONOSUPPORT));

    asm.place(block(ByNumber::Socketpair));
    asm.load(arg(0));
    for family in SOCKETPAIR_FAMILIES {
        asm.jeq_to(family as u32, allow);
    }
    asm.ret(errno(libc::EAFNOSUPPORT));

    asm.place(allow);
    asm.ret(libc::SECCOMP_RET_ALLOW);
    asm.finish()
}

/// Installs the filter on the calling thread. No `no_new_privs`: the caller is root of the
/// sandbox's user namespace (CAP_SYS_ADMIN there suffices), and setuid `sudo` must keep working.
pub fn install() -> Result<()> {
    let program = compile().map_err(|e| LaunchError(format!("compile seccomp filter: {e}")))?;
    install_program(&program)
}

/// Only syscalls: safe in a forked child of a multi-threaded process (the unit tests).
fn install_program(program: &[libc::sock_filter]) -> Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at a valid BPF program that outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    check(r, || "install seccomp filter".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Runs a classic BPF program on one `seccomp_data` (the instructions [`compile`] and
    /// seccompiler emit); returns the action and the number of instructions run.
    fn run(program: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
        let word = |offset: u32| -> u32 {
            match offset {
                DATA_NR => nr,
                DATA_ARCH => arch,
                o if (DATA_ARGS..DATA_ARGS + 48).contains(&o) && o.is_multiple_of(4) => {
                    let arg = args[((o - DATA_ARGS) / 8) as usize];
                    if (o - DATA_ARGS).is_multiple_of(8) {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                o => panic!("load at {o}"),
            }
        };
        let (mut pc, mut a, mut steps) = (0usize, 0u32, 0usize);
        loop {
            let insn = program[pc];
            steps += 1;
            let code = u32::from(insn.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = word(insn.k),
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= insn.k,
                c if c == libc::BPF_RET | libc::BPF_K => return (insn.k, steps),
                c if c == libc::BPF_JMP | libc::BPF_JA | libc::BPF_K => pc += insn.k as usize,
                c if c & 0x07 == libc::BPF_JMP && c & libc::BPF_X == 0 => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => a == insn.k,
                        op if op == libc::BPF_JGT => a > insn.k,
                        op if op == libc::BPF_JGE => a >= insn.k,
                        op if op == libc::BPF_JSET => a & insn.k != 0,
                        op => panic!("jump op {op:#x}"),
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                c => panic!("instruction {c:#x}"),
            }
        }
    }

    /// The policy as it was built before (seccompiler, four filters with one action each),
    /// kept as the reference the single program must agree with.
    fn four_filters() -> Vec<Vec<libc::sock_filter>> {
        use std::collections::BTreeMap;

        use seccompiler::{
            BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
            SeccompFilter, SeccompRule, TargetArch,
        };
        let none_of = |arg: u8, values: &[u64]| {
            let conditions = values
                .iter()
                .map(|v| {
                    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v)
                        .unwrap()
                })
                .collect();
            SeccompRule::new(conditions).unwrap()
        };
        let as_u64 = |values: &[libc::c_int]| values.iter().map(|v| *v as u64).collect::<Vec<_>>();
        let arch = TargetArch::x86_64;
        let filter = |rules, errno: i32| {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )
            .unwrap()
        };
        let mut allowlist: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
            .iter()
            .chain(REFUSED)
            .map(|(_, nr)| (*nr, vec![]))
            .collect();
        for nr in [
            libc::SYS_clone,
            libc::SYS_personality,
            libc::SYS_socket,
            libc::SYS_socketpair,
        ] {
            allowlist.insert(nr, vec![]);
        }
        let allowlist = SeccompFilter::new(
            allowlist,
            SeccompAction::Errno(libc::ENOSYS as u32),
            SeccompAction::Allow,
            arch,
        )
        .unwrap();
        let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
            REFUSED.iter().map(|(_, nr)| (*nr, vec![])).collect();
        let clone_rules = CLONE_NEW_FLAGS
            .iter()
            .map(|flag| {
                let cond = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(*flag as u64),
                    *flag as u64,
                )
                .unwrap();
                SeccompRule::new(vec![cond]).unwrap()
            })
            .collect();
        eperm.insert(libc::SYS_clone, clone_rules);
        let personas: Vec<u64> = PERSONAS.iter().map(|p| u64::from(*p)).collect();
        eperm.insert(libc::SYS_personality, vec![none_of(0, &personas)]);
        let families = BTreeMap::from([
            (
                libc::SYS_socket,
                vec![none_of(0, &as_u64(&SOCKET_FAMILIES))],
            ),
            (
                libc::SYS_socketpair,
                vec![none_of(0, &as_u64(&SOCKETPAIR_FAMILIES))],
            ),
        ]);
        let mut netlink_rule = vec![
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::AF_NETLINK as u64,
            )
            .unwrap(),
        ];
        for protocol in NETLINK_PROTOCOLS {
            netlink_rule.push(
                SeccompCondition::new(
                    2,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    protocol as u64,
                )
                .unwrap(),
            );
        }
        let protocols = BTreeMap::from([(
            libc::SYS_socket,
            vec![SeccompRule::new(netlink_rule).unwrap()],
        )]);
        [
            allowlist,
            filter(eperm, libc::EPERM),
            filter(families, libc::EAFNOSUPPORT),
            filter(protocols, libc::EPROTONOSUPPORT),
        ]
        .into_iter()
        .map(|f| {
            BpfProgram::try_from(f)
                .unwrap()
                .iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect()
        })
        .collect()
    }

    /// What the kernel makes of a stack of filters: each runs, the lowest action wins, and of
    /// equal actions the most recently installed filter's.
    fn combined(filters: &[Vec<libc::sock_filter>], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut verdict = libc::SECCOMP_RET_ALLOW;
        for program in filters.iter().rev() {
            let (r, _) = run(program, nr, arch, args);
            let action = |v: u32| (v & libc::SECCOMP_RET_ACTION_FULL) as i32;
            if action(r) < action(verdict) {
                verdict = r;
            }
        }
        verdict
    }

    #[test]
    fn the_single_program_decides_as_the_four_filters_did() {
        let program = compile().unwrap();
        let reference = four_filters();
        // Every number the lists could touch, x32's (bit 30) and the extremes.
        let mut numbers: Vec<u32> = (0..1024).collect();
        numbers.extend((0..600).map(|n| n | 0x4000_0000));
        numbers.extend([0x7fff_ffff, 0x8000_0000, u32::MAX]);
        let mut values: Vec<u64> = vec![0, 1, u64::from(u32::MAX), u64::MAX, 1 << 32];
        values.extend(PERSONAS.iter().map(|p| u64::from(*p)));
        values.extend([0x0040_0000, 0x0004_0000, 8]);
        values.extend(CLONE_NEW_FLAGS.iter().map(|f| *f as u64));
        values.extend(
            CLONE_NEW_FLAGS
                .iter()
                .map(|f| (*f as u64) | libc::SIGCHLD as u64),
        );
        values.extend([
            libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64 | libc::SIGCHLD as u64,
            (libc::CLONE_NEWUSER as u64) << 32,
        ]);
        for family in 0..48u64 {
            values.push(family);
            values.push((1 << 32) | family);
        }
        let mut worst = 0;
        for &nr in &numbers {
            let special = [
                libc::SYS_clone,
                libc::SYS_personality,
                libc::SYS_socket,
                libc::SYS_socketpair,
            ]
            .contains(&(nr as libc::c_long));
            let arg_sets: Vec<[u64; 6]> = if special {
                values
                    .iter()
                    .flat_map(|a0| (0..32u64).map(move |a2| [*a0, 3, a2, 0, 0, 0]))
                    .collect()
            } else {
                vec![[0; 6], [u64::MAX; 6]]
            };
            for args in arg_sets {
                for arch in [AUDIT_ARCH_X86_64, 0x4000_0003] {
                    let (got, steps) = run(&program, nr, arch, args);
                    worst = worst.max(steps);
                    let want = combined(&reference, nr, arch, args);
                    assert_eq!(got, want, "nr {nr:#x} arch {arch:#x} args {args:x?}");
                }
            }
        }
        // A binary search: a few instructions per syscall, not one per listed number.
        assert!(worst <= 30, "{worst} instructions for one syscall");
        assert!(program.len() < 400, "{} instructions", program.len());
    }

    /// Every listed name is an x86_64 syscall with that number: checked against the kernel's uapi
    /// header where it knows the name, against the running kernel's `__x64_sys_*` symbols for the
    /// syscalls newer than the header.
    #[test]
    fn lists_name_real_x86_64_syscalls() {
        let header = std::fs::read_to_string("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
            .unwrap_or_default();
        let numbers: BTreeMap<&str, libc::c_long> = header
            .lines()
            .filter_map(|l| l.strip_prefix("#define __NR_"))
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(name, nr)| Some((name, nr.trim().parse().ok()?)))
            .collect();
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let mut seen = BTreeSet::new();
        for (name, nr) in ALLOWED.iter().chain(REFUSED) {
            match numbers.get(name) {
                Some(expected) => assert_eq!(nr, expected, "{name}"),
                None => assert!(
                    kallsyms.contains(&format!(" __x64_sys_{name}\n")),
                    "{name} is not a syscall of this kernel"
                ),
            }
            assert!(*nr < 0x4000_0000, "{name}: not a native x86_64 number");
            assert!(seen.insert(*nr), "{name} listed twice");
        }
        for nr in [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_personality,
            libc::SYS_socket,
            libc::SYS_socketpair,
        ] {
            assert!(!seen.contains(&nr), "{nr} has its own rules");
        }
    }

    fn errno_of(r: libc::c_long) -> i32 {
        if r >= 0 {
            0
        } else {
            // SAFETY: reads this thread's errno.
            unsafe { *libc::__errno_location() }
        }
    }

    /// Forks a child that installs the filter (with `no_new_privs`, as the test may not be root)
    /// and runs `probe`; returns the child's wait status. The child makes only syscalls.
    fn in_filtered_child(probe: fn() -> i32) -> i32 {
        let program = compile().unwrap();
        // SAFETY: the child only makes syscalls (no allocation, no locks) and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: prctl with integer arguments; _exit never returns.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let code = if install_program(&program).is_ok() {
                    probe()
                } else {
                    99
                };
                libc::_exit(code)
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    /// The first probe whose errno is wrong (1-based), or 0.
    fn probes() -> i32 {
        let s = |nr: libc::c_long, a: u64, b: u64, c: u64| {
            // SAFETY: each probe's arguments are harmless (bad fds, null pointers, flags).
            errno_of(unsafe { libc::syscall(nr, a, b, c) })
        };
        let vsock = libc::AF_VSOCK as u64;
        let stream = libc::SOCK_STREAM as u64;
        let raw = libc::SOCK_RAW as u64;
        let netlink = libc::AF_NETLINK as u64;
        let checks = [
            (s(libc::SYS_getpid, 0, 0, 0), 0),
            (s(1000, 0, 0, 0), libc::ENOSYS),
            (s(libc::SYS_clone3, 0, 0, 0), libc::ENOSYS),
            (s(libc::SYS_sysfs, 3, 0, 0), libc::ENOSYS),
            (s(libc::SYS_keyctl, 0, 0, 0), libc::EPERM),
            (s(libc::SYS_io_uring_setup, 1, 0, 0), libc::EPERM),
            (
                s(libc::SYS_unshare, libc::CLONE_NEWUSER as u64, 0, 0),
                libc::EPERM,
            ),
            (s(libc::SYS_personality, 0x0040_0000, 0, 0), libc::EPERM),
            (s(libc::SYS_personality, 0xffff_ffff, 0, 0), 0),
            (s(libc::SYS_socket, vsock, stream, 0), libc::EAFNOSUPPORT),
            (
                s(libc::SYS_socket, (1 << 32) | vsock, stream, 0),
                libc::EAFNOSUPPORT,
            ),
            (
                s(libc::SYS_socket, libc::AF_PACKET as u64, raw, 0),
                libc::EAFNOSUPPORT,
            ),
            (
                s(libc::SYS_socket, netlink, raw, libc::NETLINK_GENERIC as u64),
                libc::EPROTONOSUPPORT,
            ),
            (s(libc::SYS_socket, libc::AF_UNIX as u64, stream, 0), 0),
            (
                s(libc::SYS_socket, netlink, raw, libc::NETLINK_ROUTE as u64),
                0,
            ),
        ];
        checks
            .iter()
            .position(|(got, want)| got != want)
            .map_or(0, |i| i as i32 + 1)
    }

    #[test]
    fn filters_refuse_with_the_documented_errnos() {
        let status = in_filtered_child(probes);
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "probe number that failed");
    }

    #[test]
    fn an_i386_syscall_kills_the_process() {
        fn int80_getpid() -> i32 {
            let mut eax: u32 = 20; // i386 getpid
            // SAFETY: a syscall through the compat entry; it clobbers nothing else.
            unsafe { std::arch::asm!("int 0x80", inout("eax") eax) };
            eax as i32
        }
        let status = in_filtered_child(int80_getpid);
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "status {status:#x}"
        );
    }
}
