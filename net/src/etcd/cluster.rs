//! etcd's Cluster service: the member list, and remove, promote and update
//! through the engine's membership changes (docs/membership.md). Add is
//! not served yet: etcd's request carries no name, and a keel member joins
//! under the name the list gives it (use `keelctl member add`).

use std::net::SocketAddr;

use keel_engine::shard::{Cluster, MemberChange};
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::cluster_server;
use tonic::{Request, Response, Status};

use crate::etcd::cores::{client, Cores};
use crate::etcd::header::Headers;
use crate::etcd::permits::check;

/// The Cluster service of one node.
#[derive(Clone)]
pub(crate) struct ClusterService {
    pub(crate) auth: crate::auth::Auth,
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
    /// This member's client address (the others' are not in the list).
    pub(crate) client_address: SocketAddr,
}

/// A peer URL as etcd's clients give it (`http://host:port`), as keel's
/// peer address (`host:port`).
fn peer_address(url: &str) -> String {
    let address = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    address.trim_end_matches('/').to_string()
}

impl ClusterService {
    fn members(&self, cluster: &Cluster) -> Vec<pb::Member> {
        cluster
            .members
            .iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name.clone(),
                // A member alone, started without peers, has none.
                peer_ur_ls: if m.peer_address.is_empty() {
                    Vec::new()
                } else {
                    vec![format!("http://{}", m.peer_address)]
                },
                client_ur_ls: if m.id == cluster.me {
                    vec![format!("http://{}", self.client_address)]
                } else {
                    Vec::new()
                },
                is_learner: m.learner,
            })
            .collect()
    }

    /// Makes `change` and answers the members after it.
    async fn change(&self, change: MemberChange) -> Result<Vec<pb::Member>, Status> {
        let (_, cluster) = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).change_members(change).await })
            })
            .await?;
        Ok(self.members(&cluster))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        Err(Status::unimplemented(
            "etcdserver: keel adds a member by name: use keelctl member add",
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        let members = self
            .change(MemberChange::Remove(request.into_inner().id))
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.headers.member()),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        let request = request.into_inner();
        let Some(url) = request.peer_ur_ls.first() else {
            return Err(Status::invalid_argument("etcdserver: no peer URL given"));
        };
        let members = self
            .change(MemberChange::Update {
                id: request.id,
                peer_address: peer_address(url),
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.headers.member()),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        check(&self.auth, &request, |_, _| Ok(()))?;
        let cluster = self.cores.node().client().cluster();
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.headers.member()),
            members: self.members(&cluster),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        let members = self
            .change(MemberChange::Promote(request.into_inner().id))
            .await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.headers.member()),
            members,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_url_is_its_host_and_port() {
        assert_eq!(peer_address("http://10.0.0.1:2380"), "10.0.0.1:2380");
        assert_eq!(peer_address("https://h:2380/"), "h:2380");
        assert_eq!(peer_address("h:2380"), "h:2380");
    }
}
