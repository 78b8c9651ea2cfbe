//! The CPU backend: the reference implementation of every primitive.

/// The CPU device with its own thread pool.
pub struct Cpu {
    threads: usize,
}

impl Cpu {
    /// Creates a CPU backend using `threads` threads (0 means all cores).
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Ok(Self { threads })
    }

    /// Number of threads used.
    pub fn threads(&self) -> usize {
        self.threads
    }
}
