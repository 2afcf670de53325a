//! Instances described in batches for the capacity reconciler. Each node's
//! reconcile asks for its instance; the asks that arrive within a short
//! window (or up to [`BATCH`] of them) go out as one
//! `Cloud::describe_instances`, and the attached secondary ENIs of the whole
//! batch that the caller cannot place (no live pod's annotation names them)
//! are described by id in as few calls as the cloud allows, for their tags.
//! A recount of N nodes with S such ENIs costs `ceil(N / 100)` instance
//! calls and `ceil(S / 100)` ENI calls, not one or two calls per node.

use crate::tasks::AbortOnDrop;
use ipam::ids::{EniId, InstanceId};
use providers::model::{Eni, EniFilter, Instance};
use providers::{Cloud, CloudError};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most instances per batch (Alibaba's `DescribeInstances` page; EC2 takes
/// more, but a batch this size is one call on both).
pub const BATCH: usize = 100;

/// What the cloud says of one instance.
#[derive(Clone, Debug)]
pub struct Described {
    /// `None`: the instance does not exist.
    pub instance: Option<Instance>,
    /// The attached secondary ENIs the asker wanted described, as found
    /// (an ENI gone meanwhile is missing).
    pub enis: Vec<Eni>,
}

struct Ask {
    instance: InstanceId,
    /// Secondary ENIs the asker can place itself (no need to describe).
    known: HashSet<EniId>,
    reply: oneshot::Sender<Result<Described, CloudError>>,
}

/// The batching task; stops when dropped.
pub struct Census {
    tx: mpsc::UnboundedSender<Ask>,
    _task: AbortOnDrop,
}

impl Census {
    /// Batch asks gathered for up to `window`.
    pub fn start(cloud: Arc<dyn Cloud>, window: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            _task: AbortOnDrop::spawn(run(cloud, window, rx)),
        }
    }

    /// The instance and its attached secondary ENIs other than `known`.
    pub async fn describe(
        &self,
        instance: &InstanceId,
        known: HashSet<EniId>,
    ) -> Result<Described, CloudError> {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            instance: instance.clone(),
            known,
            reply,
        };
        let stopped = || {
            CloudError::new(
                providers::ErrorKind::Transient,
                "DescribeInstances",
                "Stopped",
                "the instance census stopped",
            )
        };
        self.tx.send(ask).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(cloud: Arc<dyn Cloud>, window: Duration, mut rx: mpsc::UnboundedReceiver<Ask>) {
    while let Some(first) = rx.recv().await {
        let mut asks = vec![first];
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        while distinct(&asks) < BATCH {
            tokio::select! {
                _ = &mut deadline => break,
                next = rx.recv() => match next {
                    Some(a) => asks.push(a),
                    None => break,
                },
            }
        }
        answer(cloud.as_ref(), asks).await;
    }
}

fn distinct(asks: &[Ask]) -> usize {
    asks.iter()
        .map(|a| &a.instance)
        .collect::<HashSet<_>>()
        .len()
}

async fn answer(cloud: &dyn Cloud, asks: Vec<Ask>) {
    let mut ids: Vec<InstanceId> = asks.iter().map(|a| a.instance.clone()).collect();
    ids.sort();
    ids.dedup();
    let result = describe(cloud, &ids, &asks).await;
    for ask in asks {
        let reply = match &result {
            Ok((instances, enis)) => {
                let instance = instances.get(&ask.instance).cloned();
                let enis = instance
                    .iter()
                    .flat_map(|i| &i.enis)
                    .filter(|a| !a.primary && !ask.known.contains(&a.eni_id))
                    .filter_map(|a| enis.get(&a.eni_id).cloned())
                    .collect();
                Ok(Described { instance, enis })
            }
            Err(e) => Err(e.clone()),
        };
        let _ = ask.reply.send(reply);
    }
}

type Found = (HashMap<InstanceId, Instance>, HashMap<EniId, Eni>);

async fn describe(
    cloud: &dyn Cloud,
    ids: &[InstanceId],
    asks: &[Ask],
) -> Result<Found, CloudError> {
    let instances: HashMap<InstanceId, Instance> = cloud
        .describe_instances(ids)
        .await?
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect();
    // Only what some asker cannot place itself.
    let mut wanted: Vec<EniId> = asks
        .iter()
        .filter_map(|a| Some((a, instances.get(&a.instance)?)))
        .flat_map(|(a, i)| {
            i.enis
                .iter()
                .filter(|e| !e.primary && !a.known.contains(&e.eni_id))
                .map(|e| e.eni_id.clone())
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let enis = if wanted.is_empty() {
        HashMap::new()
    } else {
        cloud
            .describe_enis(&EniFilter {
                eni_ids: wanted,
                ..EniFilter::default()
            })
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect()
    };
    Ok((instances, enis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::ids::{InstanceType, SubnetId, ZoneId};
    use mocks::cloud::spec::InstanceSpec;
    use mocks::cloud::World;

    fn world(instances: usize) -> World {
        let w = World::from_yaml(
            r#"
region: cn-hangzhou
accessKeys: [{id: k, secret: s}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, main: true}]}]
vswitches: [{id: vsw-1, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.0.0/20}]
securityGroups: [{id: sg-1, vpc: vpc-1}]
"#,
        )
        .unwrap();
        for i in 0..instances {
            w.add_instance(&InstanceSpec {
                id: InstanceId::new(format!("i-{i}")),
                instance_type: InstanceType::new("ecs.g6.xlarge"),
                zone: ZoneId::new("cn-hangzhou-h"),
                vswitch: SubnetId::new("vsw-1"),
                private_ip: format!("192.168.0.{}", 10 + i).parse().unwrap(),
                security_groups: vec![],
            })
            .unwrap();
        }
        w
    }

    #[tokio::test]
    async fn many_asks_at_once_are_one_instance_call_and_unknown_ids_are_none() {
        let w = world(150);
        let cloud: Arc<dyn Cloud> = Arc::new(w.clone());
        let census = Arc::new(Census::start(cloud.clone(), Duration::from_millis(50)));
        let asks = (0..150).chain([999]).map(|i| {
            let census = census.clone();
            async move {
                census
                    .describe(&InstanceId::new(format!("i-{i}")), HashSet::new())
                    .await
            }
        });
        let answers = futures::future::join_all(asks).await;
        for (i, a) in answers.iter().enumerate() {
            let a = a.as_ref().unwrap();
            if i < 150 {
                let inst = a.instance.as_ref().unwrap();
                assert_eq!(inst.id.as_str(), format!("i-{i}"));
                assert!(inst.enis.iter().any(|e| e.primary));
            } else {
                assert!(a.instance.is_none(), "i-999 does not exist");
            }
            assert!(a.enis.is_empty(), "no secondary ENIs yet");
        }
        // 151 asks: two batches of at most 100 instances, one call each.
        assert_eq!(w.calls().get("DescribeInstances"), Some(&2));
        assert_eq!(w.calls().get("DescribeNetworkInterfaces"), None);
    }

    #[tokio::test]
    async fn only_the_enis_the_asker_cannot_place_are_described() {
        let w = world(2);
        let mut made = Vec::new();
        for n in 0..3 {
            let eni = w
                .create_eni(&providers::model::CreateEniRequest {
                    subnet_id: SubnetId::new("vsw-1"),
                    security_groups: vec!["sg-1".into()],
                    secondary_ip_count: 0,
                    tags: Default::default(),
                    description: String::new(),
                    idempotency_token: ipam::ids::IdempotencyToken::new(format!("t{n}")),
                })
                .await
                .unwrap();
            let on = InstanceId::new(if n < 2 { "i-0" } else { "i-1" });
            w.attach_eni(&eni.id, &on).await.unwrap();
            made.push(eni.id);
        }
        let cloud: Arc<dyn Cloud> = Arc::new(w.clone());
        let census = Census::start(cloud, Duration::from_millis(50));
        let before = w.calls();
        let known: HashSet<EniId> = [made[0].clone()].into();
        let (i0, i1) = (InstanceId::new("i-0"), InstanceId::new("i-1"));
        let (a, b) = tokio::join!(
            census.describe(&i0, known),
            census.describe(&i1, HashSet::new()),
        );
        let ids = |d: &Described| d.enis.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&a.unwrap()),
            [made[1].clone()],
            "the placed ENI is not asked for"
        );
        assert_eq!(ids(&b.unwrap()), [made[2].clone()]);
        let after = w.calls();
        let delta = |api: &str| after.get(api).unwrap_or(&0) - before.get(api).unwrap_or(&0);
        assert_eq!(delta("DescribeInstances"), 1);
        assert_eq!(
            delta("DescribeNetworkInterfaces"),
            1,
            "both instances' ENIs in one call"
        );
    }
}
