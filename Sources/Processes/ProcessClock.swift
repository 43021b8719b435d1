import Foundation
import Synchronization

/// Where processes read the current wall-clock time from. Process decisions are taken at a time the caller
/// stamps on the command, never by reading a clock inside `handle`, so every decision can be replayed; the
/// clock is asked once, at the edge (the worker, the scheduler, the test).
public protocol ProcessClock: Sendable {
    /// The current time.
    var now: Date { get }
}

/// The system's wall clock.
public struct SystemProcessClock: ProcessClock {
    /// Creates the clock.
    public init() {}

    /// `Date()`.
    public var now: Date { Date() }
}

/// A clock that only moves when told to, so a test can jump hours or days ahead without waiting.
public final class ManualClock: ProcessClock {
    private let current: Mutex<Date>

    /// Creates a clock showing `start` (by default 2030-01-01T00:00:00Z, a fixed and readable instant).
    public init(start: Date = Date(timeIntervalSince1970: 1_893_456_000)) {
        current = Mutex(start)
    }

    /// The time the clock shows.
    public var now: Date { current.withLock { $0 } }

    /// Moves the clock forward by `duration` (a negative duration moves it back).
    public func advance(by duration: Duration) {
        current.withLock { $0 = $0.addingTimeInterval(duration.timeInterval) }
    }

    /// Moves the clock forward by `days` days of 24 hours.
    public func advance(days: Int) {
        advance(by: .seconds(days * 86_400))
    }

    /// Sets the clock to `date`.
    public func set(to date: Date) {
        current.withLock { $0 = date }
    }
}

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    var timeInterval: TimeInterval { seconds }

    /// The duration closest to `interval` seconds.
    init(timeInterval interval: TimeInterval) {
        self = .nanoseconds(Int64((interval * 1e9).rounded()))
    }
}
