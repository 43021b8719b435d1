import Synchronization

/// A clock whose sleeps return at once and move its time forward, recording every requested delay.
///
/// Give it to a `CommandExecutor` to test retry backoff without waiting.
public final class ImmediateClock: Clock, Sendable {
    /// A point on the clock: the time elapsed since the clock was made.
    public struct Instant: InstantProtocol, Sendable, Hashable, Comparable {
        /// Time since the clock's start.
        public var offset: Duration

        /// Creates an instant `offset` after the start.
        public init(offset: Duration) { self.offset = offset }

        /// The instant `duration` later.
        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }

        /// The time from `self` to `other`.
        public func duration(to other: Instant) -> Duration { other.offset - offset }

        /// Earlier instants first.
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleeps: [Duration] = []
    }

    private let state = Mutex(State())

    /// Creates a clock at offset zero.
    public init() {}

    /// The current instant: the sum of all sleeps so far.
    public var now: Instant { state.withLock { $0.now } }

    /// Zero: the clock is exact.
    public var minimumResolution: Duration { .zero }

    /// Every delay slept so far, in order.
    public var sleeps: [Duration] { state.withLock { $0.sleeps } }

    /// Records the delay and advances the clock to `deadline` without waiting. Throws if the task is cancelled.
    public func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        try Task.checkCancellation()
        state.withLock { state in
            state.sleeps.append(max(.zero, state.now.duration(to: deadline)))
            state.now = max(state.now, deadline)
        }
    }
}
