//! Users and groups from the sandbox's own /etc/passwd and /etc/group.

use std::collections::HashMap;

use burrow_envd::ConnectError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    /// Supplementary groups including the primary one.
    pub groups: Vec<u32>,
}

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Looks a user up by name (files are re-read so users added at runtime are seen).
pub fn lookup_user(name: &str) -> Result<User, ConnectError> {
    let passwd = read(PASSWD);
    let group = read(GROUP);
    find_user(&passwd, &group, name).ok_or_else(|| {
        ConnectError::new(
            burrow_envd::Code::Unauthenticated,
            format!("invalid username: '{name}'"),
        )
    })
}

pub fn find_user(passwd: &str, group: &str, name: &str) -> Option<User> {
    let fields: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[0] == name)?;
    let uid = fields[2].parse().ok()?;
    let gid = fields[3].parse().ok()?;
    let mut groups = vec![gid];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let is_member = f.len() >= 4 && f[3].split(',').any(|m| m == name);
        if let (true, Ok(g)) = (is_member, f.get(2).unwrap_or(&"").parse::<u32>())
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    Some(User {
        name: name.to_string(),
        uid,
        gid,
        home: if fields[5].is_empty() {
            "/".into()
        } else {
            fields[5].to_string()
        },
        groups,
    })
}

/// uid → name and gid → name tables for rendering owners.
#[derive(Debug, Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    pub fn load() -> Self {
        Self::parse(&read(PASSWD), &read(GROUP))
    }

    pub fn parse(passwd: &str, group: &str) -> Self {
        let table = |text: &str| {
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.get(2)?.parse().ok()?, (*f.first()?).to_string()))
                })
                .collect::<HashMap<u32, String>>()
        };
        Self {
            users: table(passwd),
            groups: table(group),
        }
    }

    pub fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    pub fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_and_groups() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n";
        let group = "root:x:0:\nuser:x:1000:\nsudo:x:27:user,other\n";
        let u = find_user(passwd, group, "user").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(u.groups, vec![1000, 27]);
        assert!(find_user(passwd, group, "nobody").is_none());
        let names = Names::parse(passwd, group);
        assert_eq!(names.user(1000), "user");
        assert_eq!(names.group(27), "sudo");
        assert_eq!(names.user(4242), "4242");
    }
}
