//! Fault injection for the crate's own tests: make the n-th write or sync
//! fail. Compiled to nothing outside `cfg(test)`.

pub(crate) use imp::*;

#[cfg(test)]
mod imp {
    use std::cell::Cell;

    thread_local! {
        static WRITES_LEFT: Cell<Option<u32>> = const { Cell::new(None) };
        static SYNCS_LEFT: Cell<Option<u32>> = const { Cell::new(None) };
    }

    fn tick(counter: &'static std::thread::LocalKey<Cell<Option<u32>>>) -> std::io::Result<()> {
        counter.with(|c| match c.get() {
            Some(0) => Err(std::io::Error::other("injected fault")),
            Some(n) => {
                c.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        })
    }

    pub(crate) fn before_write() -> std::io::Result<()> {
        tick(&WRITES_LEFT)
    }

    pub(crate) fn before_sync() -> std::io::Result<()> {
        tick(&SYNCS_LEFT)
    }

    /// Lets `n` more writes succeed on this thread, then fails every one.
    pub(crate) fn fail_writes_after(n: Option<u32>) {
        WRITES_LEFT.with(|c| c.set(n));
    }

    /// Lets `n` more syncs succeed on this thread, then fails every one.
    pub(crate) fn fail_syncs_after(n: Option<u32>) {
        SYNCS_LEFT.with(|c| c.set(n));
    }
}

#[cfg(not(test))]
mod imp {
    #[inline(always)]
    pub(crate) fn before_write() -> std::io::Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn before_sync() -> std::io::Result<()> {
        Ok(())
    }
}
