//! Transfer slots: what a blob body holds while it is sent. `--max-transfers` of them in all, and a share
//! of those per client address, so that one client (or one stalled machine) cannot take them all. Only
//! blob bodies take one: `/v2/`, manifests and errors are answered from memory at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Addresses whose slots are all free are forgotten once more than this many are remembered.
const REMEMBERED: usize = 1024;

pub struct Slots {
    total: Arc<Semaphore>,
    per_address: usize,
    addresses: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// Held until the blob body is sent (or its connection is closed).
pub struct Slot {
    _own: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(total: usize, per_address: usize) -> Slots {
        Slots {
            total: Arc::new(Semaphore::new(total.max(1))),
            per_address: per_address.max(1),
            addresses: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot of `address`'s share first, then for one of all: a client waiting beyond its
    /// share holds none of the others.
    pub async fn take(&self, address: IpAddr) -> Slot {
        let own = {
            let mut addresses = self.addresses.lock().expect("not poisoned");
            if addresses.len() >= REMEMBERED {
                // The map holds one reference; a permit or a waiter holds another.
                addresses.retain(|_, share| Arc::strong_count(share) > 1);
            }
            addresses
                .entry(address)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_address)))
                .clone()
        };
        let own = own.acquire_owned().await.expect("never closed");
        let total = self
            .total
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Slot {
            _own: own,
            _total: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One address gets its share and waits for more; another still gets a slot at once.
    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let slots = Slots::new(4, 2);
        let greedy: IpAddr = "10.0.0.2".parse().unwrap();
        let held = [slots.take(greedy).await, slots.take(greedy).await];
        let third = tokio::time::timeout(Duration::from_millis(100), slots.take(greedy)).await;
        assert!(third.is_err(), "a third slot for one address waits");
        let other = tokio::time::timeout(
            Duration::from_millis(100),
            slots.take("10.0.0.3".parse().unwrap()),
        )
        .await;
        assert!(other.is_ok(), "another address is served at once");
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(100), slots.take(greedy)).await;
        assert!(again.is_ok(), "a freed slot is taken again");
    }
}
