import Synchronization

/// Deadlines of the messages in hand, watched by one task that wakes a few times a second: what
/// `processWithinTimeLimit` needs to give up on a handling that never ends.
///
/// A timer per message (a `Task.sleep` cancelled when the handling ends) would cost a task and a timer for
/// every message, and a cancelled sleep's timer stays registered until its deadline: at 60 s a message and
/// thousands of messages a second, a hundred thousand dead timers and the memory they hold. Here a message
/// costs one dictionary entry, removed when it is done.
final class Deadlines: Sendable {
    private struct State {
        var next: UInt64 = 0
        var entries: [UInt64: (deadline: ContinuousClock.Instant, expire: @Sendable () -> Void)] = [:]
    }

    /// How often expired deadlines are looked for: a deadline expires up to this late.
    let tick: Duration
    private let state = Mutex(State())

    /// Deadlines looked at every `tick`.
    init(tick: Duration) {
        self.tick = tick
    }

    /// Calls `expire` once `deadline` has passed, unless ``remove(_:)`` is called with the returned token first.
    func add(_ deadline: ContinuousClock.Instant, expire: @escaping @Sendable () -> Void) -> UInt64 {
        state.withLock { state in
            state.next &+= 1
            state.entries[state.next] = (deadline, expire)
            return state.next
        }
    }

    /// Forgets a deadline: its `expire` is not called.
    func remove(_ token: UInt64) {
        _ = state.withLock { $0.entries.removeValue(forKey: token) }
    }

    /// The deadlines not yet expired or removed.
    var count: Int { state.withLock { $0.entries.count } }

    /// Calls the `expire` of every deadline passed by `now`, and forgets them.
    func expire(asOf now: ContinuousClock.Instant = .now) {
        let expired = state.withLock { state in
            let passed = state.entries.filter { $0.value.deadline <= now }
            for token in passed.keys { state.entries.removeValue(forKey: token) }
            return passed.values.map(\.expire)
        }
        for expire in expired { expire() }
    }

    /// Looks for expired deadlines every ``tick`` until the task is cancelled.
    func watch() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            expire()
        }
    }
}
