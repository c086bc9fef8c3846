//! `quark:actor/state`: per-actor key/value state, buffered in the turn and
//! committed with it.

use super::GuestError;
use super::bindings::quark::actor::state::Host;
use crate::turn::InstanceState;

/// Largest value one key may hold. Values travel through every commit and
/// sit in the activation's memory, so large blobs belong elsewhere.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

/// Longest state key.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

fn check_key(key: &str) -> Result<(), GuestError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(GuestError::LimitExceeded(format!("state key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len())));
    }
    if key.contains('\0') {
        return Err(GuestError::Rejected("state keys may not contain NUL characters".into()));
    }
    Ok(())
}

impl Host for InstanceState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, GuestError> {
        self.execution.allows_unless_workflow("use actor state")?;
        Ok(self.state_get(&key))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), GuestError> {
        self.execution.allows_unless_workflow("use actor state")?;
        check_key(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(GuestError::LimitExceeded(format!(
                "value for state key `{key}` is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        Ok(self.state_write(key, Some(value))?)
    }

    fn delete(&mut self, key: String) -> Result<(), GuestError> {
        self.execution.allows_unless_workflow("use actor state")?;
        check_key(&key)?;
        Ok(self.state_write(key, None)?)
    }

    fn keys(&mut self) -> Result<Vec<String>, GuestError> {
        self.execution.allows_unless_workflow("use actor state")?;
        Ok(self.state_keys())
    }
}
