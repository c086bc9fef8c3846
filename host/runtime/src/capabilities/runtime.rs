//! `quark:actor/runtime`: identity, time, and messages to other actors.

use super::GuestError;
use super::bindings::quark::actor::runtime::Host;
use crate::id::ActorId;
use crate::turn::InstanceState;

impl Host for InstanceState {
    fn self_id(&mut self) -> String {
        self.actor.to_string()
    }

    fn caller(&mut self) -> Option<String> {
        self.scope.caller.as_ref().map(ToString::to_string)
    }

    async fn call(&mut self, target: String, method: String, payload: Vec<u8>) -> Result<Vec<u8>, GuestError> {
        self.execution.allows("call other actors")?;
        let target = ActorId::parse(&target)?;
        let request = self.outgoing(target, method, payload)?;
        Ok(self.host()?.ask_request(request).await?)
    }

    fn tell(&mut self, target: String, method: String, payload: Vec<u8>) -> Result<(), GuestError> {
        self.execution.allows("tell other actors")?;
        let target = ActorId::parse(&target)?;
        let mut request = self.outgoing(target, method, payload)?;
        let host = self.host()?;
        // A tell starts its own chain: the sender does not wait for it. It
        // is sent when this turn commits, and never if the turn fails.
        request.chain = quark_core::ChainId::fresh();
        request.caller = Some(self.actor.clone());
        request.deadline = std::time::Instant::now() + host.config().call_timeout;
        host.check_payload(&request)?;
        host.registry().active(request.target.actor_type())?;
        Ok(self.buffer_tell(request)?)
    }

    fn now(&mut self) -> u64 {
        match &self.execution {
            // A workflow's clock is a recorded step, like WASI's.
            crate::turn::Execution::Workflow(run) => crate::workflow::clocks::wall_ms(run),
            _ => crate::storage::now_ms() as u64,
        }
    }
}
