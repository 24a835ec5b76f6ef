//! The sandbox's seccomp policy (see docs/isolation.md, "seccomp"): an **allowlist** modelled on
//! Docker's default profile. Anything not listed fails with ENOSYS, as on a kernel without it
//! (so new kernel syscalls stay closed until reviewed, and libc falls back where it can: clone3 →
//! clone, whose flags a classic filter can inspect). Syscalls that exist but a sandbox may not use
//! fail with EPERM, like Docker's.
//!
//! A seccompiler filter has one match action, so the policy is four filters; the kernel runs all
//! of them and the strictest verdict wins. Their refusals are disjoint, so each refused call gets
//! exactly one errno:
//! 1. allowlist: [`ALLOWED`], [`REFUSED`] and the argument-filtered syscalls pass, the rest → ENOSYS;
//! 2. EPERM: [`REFUSED`], `clone` with a `CLONE_NEW*` flag, `personality` outside [`PERSONAS`];
//! 3. EAFNOSUPPORT: `socket` of a family outside [`SOCKET_FAMILIES`], `socketpair` of one
//!    outside [`SOCKETPAIR_FAMILIES`];
//! 4. EPROTONOSUPPORT: `AF_NETLINK` sockets of a protocol outside [`NETLINK_PROTOCOLS`].
//!
//! Every filter kills the process when the syscall's architecture is not x86_64 (i386 through
//! `int 0x80`); x32 numbers (bit 30 set) are in no list, so ENOSYS.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

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

/// `arg` (its low 32 bits, what the kernel reads for an int) is none of `values`.
fn none_of(arg: u8, values: &[u64]) -> std::result::Result<SeccompRule, seccompiler::Error> {
    let conditions = values
        .iter()
        .map(|v| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(SeccompRule::new(conditions)?)
}

fn as_u64(values: &[libc::c_int]) -> Vec<u64> {
    values.iter().map(|v| *v as u64).collect()
}

/// The four programs, in installation order.
fn compile() -> std::result::Result<Vec<BpfProgram>, seccompiler::Error> {
    let arch = TargetArch::x86_64;
    let filter = |rules, errno: i32| {
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )
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
    )?;

    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|(_, nr)| (*nr, vec![])).collect();
    // clone(flags, ...): one rule per namespace flag; rules of one syscall are OR'ed.
    let clone_rules = CLONE_NEW_FLAGS
        .iter()
        .map(|flag| {
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag as u64),
                *flag as u64,
            )?;
            SeccompRule::new(vec![cond])
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    eperm.insert(libc::SYS_clone, clone_rules);
    let personas: Vec<u64> = PERSONAS.iter().map(|p| u64::from(*p)).collect();
    eperm.insert(libc::SYS_personality, vec![none_of(0, &personas)?]);

    let families = BTreeMap::from([
        (
            libc::SYS_socket,
            vec![none_of(0, &as_u64(&SOCKET_FAMILIES))?],
        ),
        (
            libc::SYS_socketpair,
            vec![none_of(0, &as_u64(&SOCKETPAIR_FAMILIES))?],
        ),
    ]);

    let netlink = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::AF_NETLINK as u64,
    )?;
    let mut netlink_rule = vec![netlink];
    for protocol in NETLINK_PROTOCOLS {
        netlink_rule.push(SeccompCondition::new(
            2,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            protocol as u64,
        )?);
    }
    let protocols = BTreeMap::from([(libc::SYS_socket, vec![SeccompRule::new(netlink_rule)?])]);

    [
        allowlist,
        filter(eperm, libc::EPERM)?,
        filter(families, libc::EAFNOSUPPORT)?,
        filter(protocols, libc::EPROTONOSUPPORT)?,
    ]
    .into_iter()
    .map(|filter| Ok(BpfProgram::try_from(filter)?))
    .collect()
}

/// Installs the filters on the calling thread. No `no_new_privs`: the caller is root of the
/// sandbox's user namespace (CAP_SYS_ADMIN there suffices), and setuid `sudo` must keep working.
pub fn install() -> Result<()> {
    let programs = compile().map_err(|e| LaunchError(format!("compile seccomp filter: {e}")))?;
    install_programs(&programs)
}

/// Only syscalls: safe in a forked child of a multi-threaded process (the unit tests).
fn install_programs(programs: &[BpfProgram]) -> Result<()> {
    for prog in programs {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            // seccompiler's sock_filter is #[repr(C)] with the same fields as the kernel's.
            filter: prog.as_ptr() as *mut libc::sock_filter,
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn filters_compile() {
        let programs = compile().unwrap();
        assert_eq!(programs.len(), 4);
        assert!(programs[0].len() > ALLOWED.len() + REFUSED.len());
        assert!(programs[1].len() > REFUSED.len());
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

    /// Forks a child that installs the filters (with `no_new_privs`, as the test may not be root)
    /// and runs `probe`; returns the child's wait status. The child makes only syscalls.
    fn in_filtered_child(probe: fn() -> i32) -> i32 {
        let programs = compile().unwrap();
        // SAFETY: the child only makes syscalls (no allocation, no locks) and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: prctl with integer arguments; _exit never returns.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let code = if install_programs(&programs).is_ok() {
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
