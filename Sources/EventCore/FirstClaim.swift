import Synchronization

/// A flag that lets exactly one of several racing parties go on: the first to claim it. For example, the work
/// and its time limit racing to resume one continuation, or a handling and its watchdog racing to settle one
/// message.
public final class FirstClaim: Sendable {
    private let claimed = Mutex(false)

    /// An unclaimed flag.
    public init() {}

    /// `true` for the first caller, `false` for every later one.
    public func claim() -> Bool {
        claimed.withLock { claimed in
            defer { claimed = true }
            return !claimed
        }
    }
}
