#if os(Linux)
import CMalloc
#endif

/// The allocator's free memory, given back to the system.
public enum FreedMemory {
    /// Returns the pages the allocator holds free to the system (glibc's `malloc_trim`), so that an idle worker's
    /// resident memory goes down after a busy spell; elsewhere it does nothing.
    public static func giveBack() {
        #if os(Linux)
        _ = malloc_trim(0)
        #endif
    }
}
