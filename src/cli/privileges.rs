//! `live --user NAME`: capture needs root or CAP_NET_RAW and CAP_NET_ADMIN only to open the
//! handles; a sensor that then parses hostile bytes for weeks should hold neither. So `live`
//! opens everything that needs the privilege first (capture handles, the metrics port, the state
//! file, the output directory), then switches to the user and drops every capability, and only
//! then starts its threads: capabilities and user ids are per thread on Linux, and a thread
//! spawned before the switch would keep them.
//!
//! Root without `--user` is refused unless `--allow-root` says so. A service that starts as an
//! unprivileged user with ambient capabilities (systemd's `AmbientCapabilities=`) needs no
//! `--user`: its capabilities are dropped all the same.

use super::UsageError;
use caps::CapSet;
use nix::unistd::{AccessFlags, Gid, Uid, User};
use std::path::Path;

/// Refuses to go on as root when neither `--user` nor `--allow-root` was given.
pub fn refuse_root(user: Option<&str>, allow_root: bool) -> Result<(), UsageError> {
    if Uid::effective().is_root() && user.is_none() && !allow_root {
        return Err(UsageError(
            "refusing to run as root: give --user NAME (the capture is opened first, then \
             stripwatch switches to NAME) or --allow-root"
                .into(),
        ));
    }
    Ok(())
}

/// The account `--user` names; switching to another user than the current one needs root.
pub fn resolve(name: &str) -> Result<User, UsageError> {
    let user = User::from_name(name)
        .map_err(|e| UsageError(format!("--user {name}: {e}")))?
        .ok_or_else(|| UsageError(format!("--user {name}: no such user")))?;
    let me = Uid::effective();
    if !me.is_root() && me != user.uid {
        return Err(UsageError(format!(
            "--user {name}: only root can switch to another user (running as uid {me})"
        )));
    }
    Ok(user)
}

/// Hands `path`, which this run has just created, to `user`, so that the unprivileged process
/// can write in it. Paths that existed before are left alone and checked by [`check_writable`]
/// after the switch: stripwatch never changes the owner of something it did not create.
pub fn give(path: &Path, user: &User) -> Result<(), UsageError> {
    nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
        UsageError(format!(
            "cannot hand {} to user {}: {e}",
            path.display(),
            user.name
        ))
    })
}

/// Fails clearly when the (now unprivileged) process cannot write `path` (skipped when it does
/// not exist: it will be created by the process itself).
pub fn check_writable(path: &Path, what: &str) -> Result<(), UsageError> {
    if !path.exists() {
        return Ok(());
    }
    nix::unistd::access(path, AccessFlags::W_OK).map_err(|e| {
        UsageError(format!(
            "{what} {} is not writable by uid {}: {e} (chown it, or choose another)",
            path.display(),
            Uid::effective()
        ))
    })
}

/// Switches to `user` (when given and not already it) and drops every capability: the bounding
/// set where that is allowed (it needs CAP_SETPCAP, which root has and a systemd service
/// usually does not; there `CapabilityBoundingSet=` bounds it), then the ambient, inheritable,
/// permitted and effective sets. Also sets no_new_privs, so that nothing executed later can
/// regain privileges. Must run before any thread is spawned.
pub fn drop_privileges(user: Option<&User>) -> Result<(), UsageError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        UsageError(format!("cannot drop privileges ({what}): {e}"))
    };
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| fail("bounding set", &e))?;
        }
    }
    if let Some(user) = user
        && user.uid != Uid::effective()
    {
        nix::unistd::setgroups(&[user.gid]).map_err(|e| fail("setgroups", &e))?;
        set_ids(user.gid, user.uid).map_err(|e| fail("setresgid/setresuid", &e))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| fail("clear capabilities", &e))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("no_new_privs", &e))?;
    Ok(())
}

/// Real, effective and saved group and user ids, group first (it needs the privilege).
fn set_ids(gid: Gid, uid: Uid) -> nix::Result<()> {
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)
}
