//! An event-sourced bank account: `deposit {"amount": N}`, `withdraw
//! {"amount": N}` and `balance`. Each accepted command appends one event;
//! the balance is the fold of the account's events, rebuilt by the host on
//! activation from the latest snapshot plus the events after it.
use quark_sdk::{Deserialize, Error, EventSourced, Result, Serialize, emit};

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

    fn balance(&mut self, _: ()) -> Result<Balance> {
        Ok(Balance { balance: self.balance })
    }
}

quark_sdk::event_sourced!(Account { deposit, withdraw, balance });
