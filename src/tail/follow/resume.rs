//! Resuming a stream at a saved position: finding the file it points into among the
//! rotation set (plain or compressed since), and what happens when it is gone.

use std::io;
use std::time::Duration;

use super::members::{list_members, matches_position, open_member, Lookup, Match, OPEN_AT_LOOKS};
use super::Follower;
use crate::tail::checkpoint::Position;
use crate::tail::rotation::SetMember;

impl Follower {
    /// Finds the file a checkpoint points into — the live file, a plain rotated one
    /// (same inode) or a compressed one (same fingerprint) — and opens it there.
    ///
    /// A listing taken while the kubelet compresses that very file (the most recently
    /// rotated one, where a restart often resumes) can name the plain file that is gone
    /// by the time it is looked at, or miss both names: the position is lost only when
    /// nothing vanished while looking and two listings in a row agree.
    pub(super) fn open_at(&mut self, pos: Position) -> io::Result<bool> {
        let mut previous: Option<Vec<SetMember>> = None;
        for _ in 0..OPEN_AT_LOOKS {
            let members = list_members(&self.key)?;
            match self.find_position(&members, &pos)? {
                Lookup::Opened => return Ok(true),
                Lookup::Vanished => {}
                Lookup::Nowhere if previous.as_ref() == Some(&members) => return self.resume_after_loss(&members, &pos),
                Lookup::Nowhere => {}
            }
            previous = Some(members);
            std::thread::sleep(Duration::from_millis(10));
        }
        let members = list_members(&self.key)?;
        self.resume_after_loss(&members, &pos)
    }

    /// Looks for `pos` among `members` and opens it there.
    pub(super) fn find_position(&mut self, members: &[SetMember], pos: &Position) -> io::Result<Lookup> {
        let mut vanished = false;
        for m in members {
            match matches_position(m, pos) {
                Ok(Match::Yes) => {}
                Ok(Match::No) => continue,
                Ok(Match::Vanished) => {
                    vanished = true;
                    continue;
                }
                // One unreadable member (a torn .gz after a node crash) is not this one.
                Err(e) => {
                    tracing::debug!(file = %m.path.display(), error = %e, "cannot identify");
                    continue;
                }
            }
            match open_member(m, self.chain_end, self.max_line, pos.offset)? {
                Some(cur) => {
                    tracing::debug!(stream = %self.key.display(), file = %m.path.display(), offset = pos.offset, "resuming");
                    self.install(cur);
                    return Ok(Lookup::Opened);
                }
                None => vanished = true,
            }
        }
        Ok(if vanished { Lookup::Vanished } else { Lookup::Nowhere })
    }

    /// The file is gone: rotation or deletion outran us while we were away. Reading
    /// goes on from the oldest file left, after a gap.
    fn resume_after_loss(&mut self, members: &[SetMember], pos: &Position) -> io::Result<bool> {
        self.stats.lost_positions += 1;
        self.lost_ahead = true;
        tracing::warn!(
            stream = %self.key.display(),
            offset = pos.offset,
            "the file this stream was being read from was deleted before logferry got back to it (down too long, or too far behind the kubelet's rotation); continuing with the oldest file left"
        );
        match members.first() {
            Some(m) => match open_member(m, self.chain_end, self.max_line, 0)? {
                Some(cur) => {
                    self.install(cur);
                    Ok(true)
                }
                None => Ok(false),
            },
            None => Ok(false),
        }
    }
}
