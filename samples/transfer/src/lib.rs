//! Bank accounts whose money moves only by outbox messages.
//!
//! `transfer {"to": "transfer/bob", "amount": 10, "id": "t-17"}` debits
//! this account and, in the same commit, sends a `credit` message to the
//! other one; the credit runs there once, after the debit committed. No
//! money is created or lost: the sum of all balances, plus credits still in
//! flight, never changes, whatever crashes in between.
//!
//! - `open {"balance": 100}`: sets the opening balance (once).
//! - `transfer {...}`: refused with `rejected` if the balance is short.
//! - `credit {"amount": 10}`: run by the outbox; `outbox::current()` names the transfer.
//! - `balance`: the balance.
use quark_sdk::{Deserialize, Error, Result, Serialize, outbox, state};

#[derive(Deserialize)]
struct Open {
    balance: i64,
}

#[derive(Deserialize)]
struct Transfer {
    to: String,
    amount: i64,
    /// The transfer's id: the credit message's id, so a retried transfer
    /// request with the same id is not sent twice while it is in flight.
    id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Credit {
    amount: i64,
}

struct Account;

impl Account {
    fn open(Open { balance }: Open) -> Result<i64> {
        if let Some(existing) = state::get::<i64>("balance")? {
            return Ok(existing);
        }
        if balance < 0 {
            return Err(Error::rejected("an opening balance cannot be negative"));
        }
        state::set("balance", &balance)?;
        Ok(balance)
    }

    fn transfer(Transfer { to, amount, id }: Transfer) -> Result<i64> {
        if amount <= 0 {
            return Err(Error::rejected("a transfer moves a positive amount"));
        }
        let balance = state::get::<i64>("balance")?.unwrap_or(0);
        if balance < amount {
            return Err(Error::rejected(format!("insufficient funds: {balance} < {amount}")));
        }
        state::set("balance", &(balance - amount))?;
        let mut credit = outbox::to_actor(&to, "credit", &Credit { amount })?;
        if let Some(id) = &id {
            credit = credit.id(id);
        }
        credit.send()?;
        Ok(balance - amount)
    }

    fn credit(Credit { amount }: Credit) -> Result<i64> {
        let balance = state::get::<i64>("balance")?.unwrap_or(0) + amount;
        state::set("balance", &balance)?;
        Ok(balance)
    }

    fn balance(_: ()) -> Result<i64> {
        Ok(state::get("balance")?.unwrap_or(0))
    }
}

quark_sdk::actor!(Account { open, transfer, credit, balance });
