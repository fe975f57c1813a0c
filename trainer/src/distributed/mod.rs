//! Training on several devices and nodes with c10d, torch.distributed's engine inside
//! libtorch: one OS process per device (a rank), the same code on CPU (Gloo) and
//! CUDA (NCCL), started by [`launch`] or by any launcher that sets torchrun's
//! environment.
//!
//! # Layout
//! - [`group`]: the process group (TCPStore rendezvous, Gloo or NCCL, collectives).
//! - [`flat`]: a unit's parameters as one flat buffer cut into shards.
//! - [`tensor_files`]: safetensors read by element range and written tensor by tensor.
//! - [`engine`]: one rank's model, optimizer state and sharded training step.
//! - [`launch`]: `absa-trainer launch`, torchrun's contract.
//! - this module: a rank's place in its group, from the environment.

pub mod flat;
pub mod group;
pub mod launch;
pub mod tensor_files;

pub use absa_jobs::Sharding;
pub use group::{Backend, DistError, ProcessGroup};

/// A rank's place in its group, as torchrun and Kubeflow's PyTorchJob describe it in
/// the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
/// `MASTER_ADDR`, `MASTER_PORT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub local_world: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl RankEnv {
    /// The rank this process is, or `None` when `WORLD_SIZE` is unset (one process).
    pub fn from_env() -> Result<Option<Self>, String> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`RankEnv::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let number = |name: &str, default: Option<usize>| -> Result<usize, String> {
            match (var(name), default) {
                (Some(v), _) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(format!("WORLD_SIZE is set but {name} is not")),
            }
        };
        let world: usize = world.trim().parse().map_err(|_| format!("WORLD_SIZE={world:?} is not a number"))?;
        let rank = number("RANK", None)?;
        let local_rank = number("LOCAL_RANK", Some(rank))?;
        let local_world = number("LOCAL_WORLD_SIZE", Some(world))?;
        let master_port = number("MASTER_PORT", Some(29500))?;
        let env = RankEnv {
            rank,
            world,
            local_rank,
            local_world,
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port: u16::try_from(master_port).map_err(|_| format!("MASTER_PORT={master_port} is not a port"))?,
        };
        if world == 0 || rank >= world || local_rank >= local_world {
            return Err(format!("rank {rank} of {world} (local {local_rank} of {local_world}) is not a place in a group"));
        }
        Ok(Some(env))
    }

    /// The variables a launcher sets for this rank.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.local_world.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<RankEnv>, String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RankEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn torchruns_variables_name_the_rank() {
        assert_eq!(env(&[]).unwrap(), None);
        let e =
            env(&[("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29400")])
                .unwrap()
                .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.local_world, e.master_port), (3, 4, 1, 2, 29400));
        let back: HashMap<&str, String> = e.vars().into_iter().collect();
        assert_eq!(back["MASTER_ADDR"], "10.0.0.1");
    }

    #[test]
    fn an_impossible_rank_is_an_error() {
        assert!(env(&[("WORLD_SIZE", "2")]).is_err(), "RANK missing");
        assert!(env(&[("WORLD_SIZE", "2"), ("RANK", "2")]).is_err());
        assert!(env(&[("WORLD_SIZE", "two"), ("RANK", "0")]).is_err());
        assert!(env(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "70000")]).is_err());
    }
}
