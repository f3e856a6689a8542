//! A fixed-capacity FIFO with its storage inline: the bridges keep requests awaiting replies in it, so
//! `send` and `poll` never allocate.

/// Up to `N` items, oldest first. Pushing onto a full queue is refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fifo<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Fifo<T, N> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self {
            items: [None; N],
            head: 0,
            len: 0,
        }
    }

    /// Items queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Free places.
    pub(crate) fn room(&self) -> usize {
        N - self.len
    }

    /// Whether no item can be added.
    pub(crate) fn is_full(&self) -> bool {
        self.len == N
    }

    /// Appends `item`; returns `false` (and drops it) when the queue is full.
    pub(crate) fn push_back(&mut self, item: T) -> bool {
        if self.is_full() {
            return false;
        }
        match self.items.get_mut((self.head + self.len) % N) {
            Some(slot) => {
                *slot = Some(item);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The oldest item.
    pub(crate) fn front(&self) -> Option<&T> {
        if self.len == 0 {
            return None;
        }
        self.items.get(self.head).and_then(Option::as_ref)
    }

    /// Removes and returns the oldest item.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items.get_mut(self.head).and_then(Option::take);
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }

    /// Position from the front of the first item `matches` accepts.
    pub(crate) fn position(&self, matches: impl Fn(&T) -> bool) -> Option<usize> {
        (0..self.len).find(|i| {
            self.items
                .get((self.head + i) % N)
                .and_then(Option::as_ref)
                .is_some_and(&matches)
        })
    }

    /// Empties the queue.
    pub(crate) fn clear(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::Fifo;

    #[test]
    fn keeps_order_refuses_when_full_and_wraps() {
        let mut q: Fifo<u32, 3> = Fifo::new();
        assert!(q.push_back(1) && q.push_back(2) && q.push_back(3));
        assert!(q.is_full() && !q.push_back(4));
        assert_eq!(q.pop_front(), Some(1));
        assert!(q.push_back(5));
        assert_eq!(q.position(|&x| x == 5), Some(2));
        assert_eq!((q.front(), q.len(), q.room()), (Some(&2), 3, 0));
        assert_eq!(
            [q.pop_front(), q.pop_front(), q.pop_front()],
            [Some(2), Some(3), Some(5)]
        );
        assert_eq!(q.pop_front(), None);
        q.push_back(7);
        q.clear();
        assert_eq!((q.len(), q.front()), (0, None));
    }
}
