import Synchronization

/// Time limits of many concurrent operations, watched by one task that wakes every ``tick`` while any limit is
/// pending and ends when none is.
///
/// A timer per operation (a `Task.sleep` raced against the work and cancelled when it ends) costs two tasks per
/// operation, and a cancelled sleep's timer stays registered until its deadline: at thousands of operations a
/// second with limits of 30 or 60 s, a timer heap of a hundred thousand dead entries and the memory they hold.
/// Here an operation costs one dictionary entry, removed when it is done. A limit expires up to ``tick`` late.
public final class Deadlines: Sendable {
    /// Identifies a deadline, to remove it.
    public struct Token: Sendable, Hashable {
        fileprivate let value: UInt64
    }

    private struct State {
        var next: UInt64 = 0
        var entries: [UInt64: (deadline: ContinuousClock.Instant, expire: @Sendable () -> Void)] = [:]
        var watching = false
    }

    /// How often passed deadlines are looked for.
    public let tick: Duration
    private let state = Mutex(State())

    /// Deadlines looked at every `tick`.
    public init(tick: Duration = .milliseconds(250)) {
        self.tick = tick
    }

    /// Calls `expire` once `deadline` has passed, unless ``remove(_:)`` is called with the returned token first.
    /// `expire` runs on the watching task: it must be quick (resume a continuation, say).
    public func add(_ deadline: ContinuousClock.Instant, expire: @escaping @Sendable () -> Void) -> Token {
        let (token, startWatching) = state.withLock { state in
            state.next &+= 1
            state.entries[state.next] = (deadline, expire)
            defer { state.watching = true }
            return (state.next, !state.watching)
        }
        if startWatching { Task.detached { await self.watch() } }
        return Token(value: token)
    }

    /// Runs `work` in a task of its own and returns its result, or nil once `limit` has passed without one; the
    /// work then goes on unobserved (and cancelling the caller does not cancel it).
    public func run<T: Sendable>(within limit: Duration, _ work: @escaping @Sendable () async -> T) async -> T? {
        let answer = FirstClaim()
        return await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let deadline = add(.now + limit) {
                if answer.claim() { continuation.resume(returning: nil) }
            }
            Task {
                let result = await work()
                self.remove(deadline)
                if answer.claim() { continuation.resume(returning: result) }
            }
        }
    }

    /// Forgets a deadline: its `expire` is not called.
    public func remove(_ token: Token) {
        _ = state.withLock { $0.entries.removeValue(forKey: token.value) }
    }

    /// The deadlines neither passed nor removed.
    public var count: Int { state.withLock { $0.entries.count } }

    /// Calls the `expire` of every deadline passed by `now`, and forgets them; true if none is left.
    @discardableResult
    public func expire(asOf now: ContinuousClock.Instant = .now) -> Bool {
        let (expired, empty) = state.withLock { state in
            let passed = state.entries.filter { $0.value.deadline <= now }
            for token in passed.keys { state.entries.removeValue(forKey: token) }
            return (passed.values.map(\.expire), state.entries.isEmpty)
        }
        for expire in expired { expire() }
        return empty
    }

    /// Looks for passed deadlines every ``tick`` until none is pending.
    private func watch() async {
        while true {
            try? await Task.sleep(for: tick)
            expire()
            let done = state.withLock { state in
                if state.entries.isEmpty { state.watching = false }
                return !state.watching
            }
            if done { return }
        }
    }
}
