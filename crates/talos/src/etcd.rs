//! The etcd calls of the Talos API (MachineService's Etcd* methods): the members a node sees,
//! removing a member, leaving, forfeiting leadership, a member's status and a snapshot.

use crate::api::machine as pb;
use crate::api::machine::machine_service_client::MachineServiceClient;
use crate::client::{Client, collect, first};
use crate::error::Result;
use crate::node::{EtcdMember, EtcdMemberStatus};

impl Client {
    /// The etcd members this node sees.
    ///
    /// # Errors
    /// As every call.
    pub async fn etcd_member_list(&self) -> Result<Vec<EtcdMember>> {
        const M: &str = "/machine.MachineService/EtcdMemberList";
        let reply = self
            .call(
                M,
                pb::EtcdMemberListRequest { query_local: false },
                |ch, req| async move {
                    MachineServiceClient::new(ch)
                        .etcd_member_list(req)
                        .await
                        .map(|r| r.into_inner())
                },
            )
            .await?;
        let msg = first(M, reply.messages, |m| &m.metadata)?;
        Ok(msg
            .members
            .into_iter()
            .map(|m| EtcdMember {
                id: m.id,
                hostname: m.hostname,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect())
    }

    /// Removes the member `id` (for members whose node is gone).
    ///
    /// # Errors
    /// As every call; `NotFound` when there is no such member.
    pub async fn etcd_remove_member_by_id(&self, id: u64) -> Result<()> {
        const M: &str = "/machine.MachineService/EtcdRemoveMemberByID";
        let msg = pb::EtcdRemoveMemberByIdRequest { member_id: id };
        let reply = self
            .call(M, msg, |ch, req| async move {
                let mut c = MachineServiceClient::new(ch);
                c.etcd_remove_member_by_id(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }

    /// Removes this node's member from etcd and stops its etcd.
    ///
    /// # Errors
    /// As every call.
    pub async fn etcd_leave_cluster(&self) -> Result<()> {
        const M: &str = "/machine.MachineService/EtcdLeaveCluster";
        let reply = self
            .call(M, pb::EtcdLeaveClusterRequest {}, |ch, req| async move {
                MachineServiceClient::new(ch)
                    .etcd_leave_cluster(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        first(M, reply.messages, |m| &m.metadata).map(drop)
    }

    /// Moves leadership away from this node; returns the member that leads afterwards.
    ///
    /// # Errors
    /// As every call; fails on a one-member cluster.
    pub async fn etcd_forfeit_leadership(&self) -> Result<String> {
        const M: &str = "/machine.MachineService/EtcdForfeitLeadership";
        let reply = self
            .call(
                M,
                pb::EtcdForfeitLeadershipRequest {},
                |ch, req| async move {
                    let mut c = MachineServiceClient::new(ch);
                    c.etcd_forfeit_leadership(req).await.map(|r| r.into_inner())
                },
            )
            .await?;
        Ok(first(M, reply.messages, |m| &m.metadata)?.member)
    }

    /// This node's etcd member status.
    ///
    /// # Errors
    /// As every call.
    pub async fn etcd_status(&self) -> Result<EtcdMemberStatus> {
        const M: &str = "/machine.MachineService/EtcdStatus";
        let reply = self
            .call(M, (), |ch, req| async move {
                MachineServiceClient::new(ch)
                    .etcd_status(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        let s = first(M, reply.messages, |m| &m.metadata)?
            .member_status
            .unwrap_or_default();
        Ok(EtcdMemberStatus {
            member_id: s.member_id,
            leader: s.leader,
            raft_term: s.raft_term,
            raft_index: s.raft_index,
            db_size: s.db_size,
            is_learner: s.is_learner,
            errors: s.errors,
            storage_version: s.storage_version,
            protocol_version: s.protocol_version,
        })
    }

    /// An etcd snapshot of this node's member (the whole streamed file).
    ///
    /// # Errors
    /// As every call.
    pub async fn etcd_snapshot(&self) -> Result<Vec<u8>> {
        const M: &str = "/machine.MachineService/EtcdSnapshot";
        self.call(M, pb::EtcdSnapshotRequest {}, |ch, req| async move {
            collect(
                MachineServiceClient::new(ch)
                    .etcd_snapshot(req)
                    .await?
                    .into_inner(),
            )
            .await
        })
        .await
    }
}
