//! `quark:actor/outbox`: messages sent with the turn, delivered after it commits.

use super::GuestError;
use super::bindings::quark::actor::outbox::{Destination as GuestDestination, Host, Message};
use crate::turn::InstanceState;
use crate::storage::outbox::Destination;

impl Host for InstanceState {
    fn send(&mut self, message: Message) -> Result<String, GuestError> {
        let destination = match message.destination {
            GuestDestination::Actor(to) => Destination::Actor { actor: to.actor, method: to.method },
            GuestDestination::Sink(name) => Destination::Sink { name },
        };
        Ok(self.send_message(destination, message.payload, message.id, message.event_type)?)
    }

    fn current(&mut self) -> Option<(String, String)> {
        let id = self.scope.message.clone()?;
        Some((id, self.scope.caller.as_ref().map(ToString::to_string).unwrap_or_default()))
    }
}
