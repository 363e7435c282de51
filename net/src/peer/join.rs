//! How a member started with `--initial-cluster-state existing` on an
//! empty directory learns the cluster it joins (net/PROTOCOL.md, "Joining";
//! etcd asks its peers the same over HTTP): it asks a member's core 0
//! peer port, by name, for the cluster's id, shard and core counts, the
//! members the cluster was created with (each shard's group starts from
//! them) and the member list now, which must name it (an operator added
//! it with `member add` first).
//!
//! Request: `KEELJOIN`, version `u16`, name length `u8` and name, CRC-32 of
//! the bytes before. Answer: body length `u32`, body, CRC-32 of the body;
//! the body is 0 and the cluster, or 1 and the refusal's message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keel_engine::shard::{Cluster, Member};

use crate::peer::wire::{Reader, WireError, VERSION};

/// The first bytes of a join request.
pub const JOIN_MAGIC: &[u8; 8] = b"KEELJOIN";
/// The largest answer taken: two lists of 64 members of two 255-byte
/// fields (about 67 KB), and room for a long history of removed ids.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// What a member tells one that joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAnswer {
    /// Shards every member has.
    pub shards: u16,
    /// Cores every member runs.
    pub cores: u16,
    /// The cluster as it was created, with the joiner as `me`.
    pub created: Cluster,
    /// The member list now, with the joiner as `me`.
    pub list: Cluster,
}

/// The bytes of a request to join as `name`.
pub fn encode_request(name: &str) -> Vec<u8> {
    let name = name.as_bytes().get(..255).unwrap_or(name.as_bytes());
    let mut out = Vec::with_capacity(16 + name.len());
    out.extend_from_slice(JOIN_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads the rest of a request whose magic was read: the name.
///
/// # Errors
/// Another version, damaged bytes, or a read failure.
pub async fn read_request(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
) -> Result<String, WireError> {
    use futures_lite::AsyncReadExt;
    let mut head = [0u8; 3];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let [v0, v1, len] = head;
    let version = u16::from_le_bytes([v0, v1]);
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let mut rest = vec![0u8; usize::from(len) + 4];
    stream
        .read_exact(&mut rest)
        .await
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let (name, crc) = rest.split_at(usize::from(len));
    let mut covered = JOIN_MAGIC.to_vec();
    covered.extend_from_slice(&head);
    covered.extend_from_slice(name);
    if crc32fast::hash(&covered).to_le_bytes() != crc {
        return Err(WireError::Checksum);
    }
    String::from_utf8(name.to_vec()).map_err(|_| WireError::Malformed("a name is not UTF-8".into()))
}

/// The answer to a member joining as `name`: the cluster, or why not.
pub fn encode_answer(
    name: &str,
    created: &Cluster,
    list: &Cluster,
    shards: usize,
    cores: usize,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    match list.members.iter().find(|m| m.name == name) {
        None => {
            body.push(1);
            let why = format!(
                "no member is named {name:?}: add it first (keelctl member add {name} \
                 --peer-urls=...), then start it with the --initial-cluster that printed"
            );
            body.extend_from_slice(why.as_bytes());
        }
        Some(_) => {
            body.push(0);
            body.extend_from_slice(&list.id.to_le_bytes());
            body.extend_from_slice(&(shards as u16).to_le_bytes());
            body.extend_from_slice(&(cores as u16).to_le_bytes());
            members(&mut body, created);
            body.extend_from_slice(&list.revision.to_le_bytes());
            members(&mut body, list);
            body.extend_from_slice(&(list.removed.len() as u32).to_le_bytes());
            for id in &list.removed {
                body.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&body);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn members(out: &mut Vec<u8>, cluster: &Cluster) {
    out.extend_from_slice(&(cluster.members.len() as u32).to_le_bytes());
    for member in &cluster.members {
        out.extend_from_slice(&member.id.to_le_bytes());
        out.push(u8::from(member.learner));
        for field in [&member.name, &member.peer_address] {
            let bytes = field.as_bytes().get(..255).unwrap_or(field.as_bytes());
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
    }
}

fn read_members(reader: &mut Reader<'_>) -> Result<Vec<Member>, WireError> {
    let count = reader.u32()? as usize;
    if count > 64 {
        return Err(WireError::Malformed(format!("{count} members")));
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = reader.u64()?;
        let learner = match reader.u8()? {
            0 => false,
            1 => true,
            other => return Err(WireError::Malformed(format!("learner flag {other}"))),
        };
        members.push(Member {
            id,
            learner,
            name: reader.text()?,
            peer_address: reader.text()?,
        });
    }
    Ok(members)
}

/// Reads an answer's body (its length and checksum checked) for a member
/// joining as `name`.
///
/// # Errors
/// The refusal, or what is wrong with the bytes.
pub fn decode_answer(name: &str, body: &[u8]) -> Result<JoinAnswer, String> {
    let (status, rest) = body.split_first().ok_or("an empty answer")?;
    if *status == 1 {
        return Err(String::from_utf8_lossy(rest).into_owned());
    }
    if *status != 0 {
        return Err(format!("an answer of status {status}"));
    }
    let mut reader = Reader(rest);
    let decode = |reader: &mut Reader<'_>| -> Result<JoinAnswer, WireError> {
        let id = reader.u64()?;
        let shards = reader.u16()?;
        let cores = reader.u16()?;
        let created = read_members(reader)?;
        let revision = reader.u64()?;
        let members = read_members(reader)?;
        let count = reader.u32()? as usize;
        if count > reader.0.len() / 8 {
            return Err(WireError::Malformed(format!("{count} removed ids")));
        }
        let removed = (0..count)
            .map(|_| reader.u64())
            .collect::<Result<Vec<u64>, _>>()?;
        if !reader.0.is_empty() {
            return Err(WireError::Malformed("bytes after the answer".into()));
        }
        let me = members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.id)
            .ok_or_else(|| WireError::Malformed(format!("the answer does not name {name:?}")))?;
        Ok(JoinAnswer {
            shards,
            cores,
            created: Cluster {
                id,
                me,
                members: created,
                removed: Vec::new(),
                revision: 0,
            },
            list: Cluster {
                id,
                me,
                members,
                removed,
                revision,
            },
        })
    };
    decode(&mut reader).map_err(|e| e.to_string())
}

/// Asks the member at `address` (its core 0 peer port) for the cluster
/// `name` joins, over TLS with `tls` if given (`--peer-cert-file`).
///
/// # Errors
/// The member's refusal, or why it could not be asked.
pub fn ask(
    address: &str,
    name: &str,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<JoinAnswer, String> {
    let target = crate::peer::core_address(address, 0)?;
    let stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("{target}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{target}: {e}"))?;
    let body = match tls {
        None => exchange(stream, name),
        Some(config) => {
            let server = rustls::pki_types::ServerName::IpAddress(target.ip().into());
            let session = rustls::ClientConnection::new(config, server)
                .map_err(|e| format!("{target}: {e}"))?;
            exchange(rustls::StreamOwned::new(session, stream), name)
        }
    }
    .map_err(|e| format!("{target}: {e}"))?;
    decode_answer(name, &body).map_err(|e| format!("{target}: {e}"))
}

/// Sends the join request for `name` on `stream` and reads the answer's
/// body, checked against its checksum.
fn exchange(mut stream: impl Read + Write, name: &str) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| e.to_string();
    stream.write_all(&encode_request(name)).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(io)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_ANSWER_BYTES {
        return Err(format!("an answer of {len} bytes"));
    }
    let mut body = vec![0u8; len + 4];
    stream.read_exact(&mut body).map_err(io)?;
    let crc = body.split_off(len);
    if crc32fast::hash(&body).to_le_bytes()[..] != crc[..] {
        return Err("the answer fails its checksum".to_string());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips_and_names_the_joiner() {
        let initial = Cluster::parse_initial("a=h:1,b=h:2,c=h:3").unwrap();
        let created = Cluster::bootstrap("a", &initial, "t").unwrap();
        let mut list = created.clone();
        list.members.push(Member {
            id: 77,
            name: "d".into(),
            peer_address: "h:4".into(),
            learner: true,
        });
        list.removed = vec![5];
        list.revision = 9;
        let bytes = encode_answer("d", &created, &list, 3, 2);
        let body = &bytes[4..bytes.len() - 4];
        let answer = decode_answer("d", body).unwrap();
        assert_eq!((answer.shards, answer.cores), (3, 2));
        assert_eq!(answer.created.members, created.members);
        assert_eq!(answer.created.me, 77);
        assert_eq!(answer.list.members, list.members);
        assert_eq!(answer.list.removed, vec![5]);
        assert_eq!(answer.list.revision, 9);
        for cut in 0..body.len() {
            assert!(decode_answer("d", &body[..cut]).is_err());
        }
        let refused = encode_answer("e", &created, &list, 3, 2);
        let err = decode_answer("e", &refused[4..refused.len() - 4]).unwrap_err();
        assert!(err.contains("member add"), "{err}");
    }

    #[test]
    fn a_request_is_checked() {
        let bytes = encode_request("d");
        let read = |bytes: Vec<u8>| {
            let mut stream = futures_lite::io::Cursor::new(bytes[8..].to_vec());
            futures_lite::future::block_on(read_request(&mut stream))
        };
        assert_eq!(read(bytes.clone()).unwrap(), "d");
        let mut damaged = bytes.clone();
        damaged[11] ^= 1;
        assert_eq!(read(damaged), Err(WireError::Checksum));
        let mut other = bytes;
        other[8] = 9;
        assert!(matches!(read(other), Err(WireError::Version(_))));
    }
}
