//! Job ids being worked on in this process. A redelivery of a job that is still
//! running (its channel dropped and the broker handed it out again) waits for
//! the first run to finish and is then answered from the store, instead of
//! paying the provider a second time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

#[derive(Default)]
pub struct InProgress {
    ids: Mutex<HashMap<String, Arc<Notify>>>,
}

/// Held while a job id is being worked on; releasing it wakes any waiter.
pub struct Claim {
    registry: Arc<InProgress>,
    id: String,
    done: Arc<Notify>,
}

impl InProgress {
    /// Claim `id`, waiting while another task holds it.
    pub async fn claim(self: &Arc<Self>, id: &str) -> Claim {
        loop {
            let busy = {
                let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
                match ids.get(id) {
                    Some(done) => done.clone(),
                    None => {
                        let done = Arc::new(Notify::new());
                        ids.insert(id.to_owned(), done.clone());
                        return Claim {
                            registry: self.clone(),
                            id: id.to_owned(),
                            done,
                        };
                    }
                }
            };
            let notified = busy.notified();
            tokio::pin!(notified);
            // Registered before re-checking, so a release in between is not missed.
            notified.as_mut().enable();
            if self.is_claimed_by(id, &busy) {
                notified.await;
            }
        }
    }

    fn is_claimed_by(&self, id: &str, done: &Arc<Notify>) -> bool {
        let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        ids.get(id)
            .is_some_and(|current| Arc::ptr_eq(current, done))
    }

    pub fn len(&self) -> usize {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut ids = self
            .registry
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ids.remove(&self.id);
        drop(ids);
        self.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_claim_waits_for_the_first_release() {
        let registry = Arc::new(InProgress::default());
        let first = registry.claim("job").await;
        let r = registry.clone();
        let waiter = tokio::spawn(async move { r.claim("job").await.id.clone() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // Other ids are independent.
        let _other = registry.claim("other").await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), "job");
        assert_eq!(registry.len(), 1, "only `other` is still claimed");
    }
}
