//! The tenants each thread looked up last, so that the keyed hot path can skip the tenant map.
//!
//! Pinning the concurrent map costs a fence on every lookup, about a third of a cache hit. A
//! thread that asks for the same few tenants again and again (the common case: a service for
//! one or a few orgs) finds them here instead, in a small direct-mapped table indexed by the
//! key's precomputed hash. An entry is used only if it was made by the
//! same manager, no tenant has been removed from that manager since, and its key equals the
//! caller's; anything else falls back to the map, which stays the source of truth.
//!
//! Entries hold the tenant (not the token: the token is still loaded through the tenant's
//! `ArcSwap` on every call, so a refresh is seen at once). A removed tenant's entry is never
//! used again and is replaced by the next lookup that lands on its slot; until then it holds a
//! tenant that has already dropped its secrets (its token, unsaved tokens and renewal
//! credentials: on removal, and for every tenant when the manager is dropped), so no secret
//! outlives its manager in these tables. What is left is the key and the instance URL.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sfauth_core::TokenKey;

use crate::state::TenantState;

/// Entries per thread. Small on purpose: a hit must be found in one probe, and a thread that
/// serves more tenants than this at once loses only the shortcut, not correctness.
const SLOTS: usize = 8;

struct Slot {
    manager: u64,
    /// The manager's removal count when the entry was made.
    removals: u64,
    tenant: Arc<TenantState>,
}

/// One in this many misses may evict a live entry of another tenant (an empty or dead slot is
/// always taken). A thread that serves many tenants in turn would otherwise pay to replace an
/// entry on nearly every call and gain nothing; a tenant asked for again and again still gets
/// in after a few calls.
const EVICT_EVERY: u32 = 8;

struct Table {
    slots: [Option<Slot>; SLOTS],
    misses: u32,
}

thread_local! {
    static RECENT: RefCell<Table> = const {
        RefCell::new(Table {
            slots: [const { None }; SLOTS],
            misses: 0,
        })
    };
}

/// A process-unique id for a manager: addresses are reused after a manager is dropped, ids are
/// not, so an entry of a dropped manager can never be taken for one of a new manager.
pub(crate) fn manager_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a manager shares with the per-thread table: its id and its removal count.
pub(crate) struct Recent {
    id: u64,
    removals: AtomicU64,
}

/// A reading of [`Recent`] taken before the map is consulted, so that a tenant found in the map
/// is remembered with a removal count no newer than the map it was found in.
#[derive(Clone, Copy)]
pub(crate) struct Epoch {
    manager: u64,
    removals: u64,
}

impl Recent {
    pub(crate) fn new() -> Self {
        Self {
            id: manager_id(),
            removals: AtomicU64::new(0),
        }
    }

    pub(crate) fn epoch(&self) -> Epoch {
        Epoch {
            manager: self.id,
            removals: self.removals.load(Ordering::Acquire),
        }
    }

    /// Called after a tenant is removed from the map: every entry made before is dead.
    pub(crate) fn removed(&self) {
        self.removals.fetch_add(1, Ordering::AcqRel);
    }
}

fn slot_of(key: &TokenKey) -> usize {
    // The low bits of a keyed SipHash are as good as any.
    (key.precomputed_hash() as usize) % SLOTS
}

/// `f` applied to this thread's entry for `key`, if it has a live one.
#[inline]
pub(crate) fn with<R>(
    epoch: Epoch,
    key: &TokenKey,
    f: impl FnOnce(&TenantState) -> R,
) -> Option<R> {
    RECENT
        .try_with(|recent| {
            let recent = recent.try_borrow().ok()?;
            let slot = recent.slots[slot_of(key)].as_ref()?;
            (slot.manager == epoch.manager
                && slot.removals == epoch.removals
                && *slot.tenant.key == *key)
                .then(|| f(&slot.tenant))
        })
        .ok()
        .flatten()
}

/// Makes `tenant` this thread's entry for its key, unless that would evict a live entry of
/// another tenant and it is not yet that entry's turn (see [`EVICT_EVERY`]).
pub(crate) fn remember(epoch: Epoch, tenant: &Arc<TenantState>) {
    let _ = RECENT.try_with(|recent| {
        let Ok(mut recent) = recent.try_borrow_mut() else {
            return;
        };
        let index = slot_of(&tenant.key);
        // An entry is dead, and free to take, once its tenant left its manager (removed, or
        // the manager dropped) or a removal since has made it unusable.
        if let Some(slot) = &recent.slots[index]
            && !slot.tenant.is_removed()
            && !(slot.manager == epoch.manager && slot.removals != epoch.removals)
        {
            recent.misses = recent.misses.wrapping_add(1);
            if recent.misses % EVICT_EVERY != 0 {
                return;
            }
        }
        let old = recent.slots[index].replace(Slot {
            manager: epoch.manager,
            removals: epoch.removals,
            tenant: tenant.clone(),
        });
        // The old tenant may be the last reference to its state: drop it after the borrow ends.
        drop(recent);
        drop(old);
    });
}
