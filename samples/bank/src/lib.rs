//! An event-sourced bank account: `deposit {"amount": N}`, `withdraw
//! {"amount": N}`, `transfer {"to": "bob", "amount": N, "id": "t-1"}` and
//! `balance`. Each accepted command appends one event; the balance is the
//! fold of the account's events, rebuilt by the host on activation from the
//! latest snapshot plus the events after it.
//!
//! A transfer is a withdrawal here plus an outbox message that deposits
//! into the other account: the event and the message commit together, and
//! the receiver's inbox runs the deposit once, so money is never lost or
//! made, even if a host dies in between.
use quark_sdk::{Deserialize, Error, EventSourced, Result, Serialize, emit, json, outbox};

/// The account: always the fold of its events.
#[derive(Default, Serialize, Deserialize)]
pub struct Account {
    balance: i64,
}

/// What can happen to an account. Stored as JSON, e.g.
/// `{"deposited": {"amount": 5}}`, with event type `deposited`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BankEvent {
    /// Money came in.
    Deposited { amount: i64 },
    /// Money went out.
    Withdrawn { amount: i64 },
}

impl EventSourced for Account {
    type Event = BankEvent;

    fn apply(&mut self, event: BankEvent) {
        match event {
            BankEvent::Deposited { amount } => self.balance += amount,
            BankEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

#[derive(Deserialize)]
struct Amount {
    amount: i64,
}

#[derive(Deserialize)]
struct Transfer {
    /// The receiving account: its key (`bob`) or id (`bank/bob`).
    to: String,
    amount: i64,
    /// The message id, for a caller that retries: the same id is not sent twice.
    id: Option<String>,
}

/// Every reply: the balance after the command.
#[derive(Serialize)]
struct Balance {
    balance: i64,
}

fn positive(amount: i64) -> Result<i64> {
    if amount <= 0 {
        return Err(Error::rejected(format!("the amount must be a positive number of cents, not {amount}")));
    }
    Ok(amount)
}

impl Account {
    fn deposit(&mut self, Amount { amount }: Amount) -> Result<Balance> {
        let amount = positive(amount)?;
        if self.balance.checked_add(amount).is_none() {
            return Err(Error::rejected("that deposit would overflow the balance"));
        }
        emit(self, BankEvent::Deposited { amount })?;
        Ok(Balance { balance: self.balance })
    }

    fn withdraw(&mut self, Amount { amount }: Amount) -> Result<Balance> {
        let amount = positive(amount)?;
        if amount > self.balance {
            return Err(Error::rejected(format!(
                "insufficient funds: the balance is {}, so {amount} cannot be withdrawn",
                self.balance
            )));
        }
        emit(self, BankEvent::Withdrawn { amount })?;
        Ok(Balance { balance: self.balance })
    }

    fn transfer(&mut self, Transfer { to, amount, id }: Transfer) -> Result<Balance> {
        let amount = positive(amount)?;
        let to = if to.contains('/') { to } else { format!("bank/{to}") };
        if to == quark_sdk::self_id() {
            return Err(Error::rejected("an account cannot transfer to itself"));
        }
        let balance = self.withdraw(Amount { amount })?;
        let credit = outbox::to_actor(&to, "deposit", &json!({ "amount": amount }))?;
        match id {
            Some(id) => credit.id(&id).send()?,
            None => credit.send()?,
        };
        Ok(balance)
    }

    fn balance(&mut self, _: ()) -> Result<Balance> {
        Ok(Balance { balance: self.balance })
    }
}

quark_sdk::event_sourced!(Account { deposit, withdraw, transfer, balance });
