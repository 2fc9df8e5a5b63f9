//! [`ImageMemory`]: a budget of bytes for images in flight, from the moment one is decoded at
//! full size until its model-size pixels have been read by the engine. Reservations are taken
//! without waiting (a full budget is a 429, not a queue) and given back when dropped.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AdmissionError;

/// Bytes per permit: reservations are rounded up to whole units.
const UNIT: u64 = 4096;

pub struct ImageMemory {
    permits: Arc<Semaphore>,
    units: usize,
}

/// Bytes of the budget held; given back when dropped.
#[derive(Debug)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl ImageMemory {
    pub fn new(bytes: u64) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, u32::MAX as u64) as usize;
        Self { permits: Arc::new(Semaphore::new(units)), units }
    }

    /// The budget, in bytes.
    pub fn capacity(&self) -> u64 {
        self.units as u64 * UNIT
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        (self.units - self.permits.available_permits()) as u64 * UNIT
    }

    /// Reserves `bytes`: [`AdmissionError::MemoryFull`] when they are not free now,
    /// [`AdmissionError::OverBudget`] when they never could be.
    pub fn try_reserve(&self, bytes: u64) -> Result<Reservation, AdmissionError> {
        let units = units(bytes);
        if units > self.units {
            return Err(AdmissionError::OverBudget { needed: bytes, capacity: self.capacity() });
        }
        match units {
            0 => Ok(Reservation::none()),
            n => (self.permits.clone().try_acquire_many_owned(n as u32))
                .map(|p| Reservation(Some(p)))
                .map_err(|_| AdmissionError::MemoryFull { needed: bytes, capacity: self.capacity() }),
        }
    }
}

fn units(bytes: u64) -> usize {
    bytes.div_ceil(UNIT) as usize
}

impl Reservation {
    /// Holds nothing.
    pub fn none() -> Self {
        Self(None)
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |p| p.num_permits() as u64 * UNIT)
    }

    /// Keeps `bytes` of what it holds (rounded up) and gives the rest back.
    pub fn shrink_to(&mut self, bytes: u64) {
        if let Some(p) = &mut self.0 {
            let extra = p.num_permits().saturating_sub(units(bytes));
            drop(p.split(extra));
        }
    }

    /// Holds `other`'s bytes too.
    pub fn merge(&mut self, other: Reservation) {
        match (&mut self.0, other.0) {
            (Some(p), Some(q)) => p.merge(q),
            (None, q) => self.0 = q,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_shrunk_merged_and_given_back() {
        let m = ImageMemory::new(10 * UNIT);
        let mut a = m.try_reserve(6 * UNIT).unwrap();
        assert!(matches!(m.try_reserve(5 * UNIT), Err(AdmissionError::MemoryFull { .. })));
        assert!(matches!(m.try_reserve(11 * UNIT), Err(AdmissionError::OverBudget { .. })));
        a.shrink_to(UNIT + 1);
        assert_eq!((a.bytes(), m.in_use()), (2 * UNIT, 2 * UNIT));
        let b = m.try_reserve(8 * UNIT).unwrap();
        a.merge(b);
        assert_eq!(m.in_use(), 10 * UNIT);
        drop(a);
        assert_eq!(m.in_use(), 0);
        assert_eq!(m.try_reserve(0).unwrap().bytes(), 0);
    }
}
