//! RTP port allocation: each call leg gets its own even port (RTP) from the configured range; the odd port above
//! it is left for RTCP. Pure bookkeeping; the io layer binds the sockets.

/// The pool of free even RTP ports.
#[derive(Clone, Debug)]
pub struct PortPool {
    free: std::collections::VecDeque<u16>,
    total: usize,
}

impl PortPool {
    /// Every even port in `lo..=hi`, handed out lowest first.
    pub fn new(lo: u16, hi: u16) -> PortPool {
        let first = lo + (lo % 2);
        let free: std::collections::VecDeque<u16> = (first..=hi).step_by(2).collect();
        let total = free.len();
        PortPool { free, total }
    }

    /// The even ports of the range (what the io layer binds).
    pub fn all_ports(lo: u16, hi: u16) -> impl Iterator<Item = u16> {
        let first = lo + (lo % 2);
        (first..=hi).step_by(2)
    }

    pub fn take(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    /// Returns a port to the back of the queue, so a port just freed is not handed to the next call while late
    /// packets for the old one may still arrive.
    pub fn give_back(&mut self, port: u16) {
        self.free.push_back(port);
    }

    pub fn in_use(&self) -> usize {
        self.total - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_even_ports_and_reuses_freed_ones_last() {
        let mut p = PortPool::new(10001, 10007);
        assert_eq!(p.take(), Some(10002));
        assert_eq!(p.take(), Some(10004));
        p.give_back(10002);
        assert_eq!(p.take(), Some(10006));
        assert_eq!(p.take(), Some(10002));
        assert_eq!(p.take(), None);
        assert_eq!(p.in_use(), 3);
    }
}
