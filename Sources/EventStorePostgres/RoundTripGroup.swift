import EventCore
import Synchronization

/// Group round trips: calls that arrive while `concurrency` groups are in flight wait, and go together in the
/// next group, which the first of them runs for all. A call that finds a free slot goes at once, alone, so a
/// lone caller never waits for company.
///
/// A group is sent only after every call in it was made, so each call still sees the database as it is after
/// the call began (a read that follows a finished append sees that append).
final class RoundTripGroup<Request: Sendable, Response: Sendable>: Sendable {
    /// A call waiting for, or riding in, a group.
    struct Entry: Sendable {
        var request: Request
        var weight: Int
        /// Resumed with the call's response, or with a group to run; `nil` for the call of the caller running it.
        var waiter: CheckedContinuation<Wake, Never>?
    }

    /// What a waiting call is woken with.
    enum Wake: Sendable {
        /// The call's own response.
        case finished(Result<Response, any Error>)
        /// A group for the woken caller to run; its own call comes first.
        case lead([Entry])
    }

    private struct Queue: ~Copyable {
        var pending: [Entry] = []
        var inFlight = 0
    }

    private let queue = Mutex(Queue())
    private let concurrency: Int
    private let maximumCount: Int
    private let maximumWeight: Int

    /// - Parameters:
    ///   - concurrency: how many groups may be in flight at once.
    ///   - maximumCount: the most calls in one group.
    ///   - maximumWeight: a group stops growing once the weights of its calls reach this (one call may exceed it).
    ///
    /// A group's `run` must end: the slot it holds goes to the next group only then. (The store's round trips
    /// end with an answer, a lost connection or their time limit, see `ConnectionRoundTrip`.)
    init(concurrency: Int, maximumCount: Int, maximumWeight: Int) {
        self.concurrency = max(1, concurrency)
        self.maximumCount = max(1, maximumCount)
        self.maximumWeight = maximumWeight
    }

    /// How many calls are waiting for a group.
    var waiting: Int { queue.withLock { $0.pending.count } }

    /// Sends `request` in a group and returns its response. `run` answers a whole group, one result per request
    /// in order; whoever runs a group uses its own `run`, so every caller must pass an equivalent one.
    func submit(
        _ request: Request, weight: Int = 0, run: @escaping @Sendable ([Request]) async -> [Result<Response, any Error>]
    ) async throws -> Response {
        let entry = Entry(request: request, weight: weight)
        let group: [Entry]
        if queue.withLock({ Self.start(&$0, limit: concurrency) }) {
            group = [entry]
        } else {
            let wake = await withCheckedContinuation { (waiter: CheckedContinuation<Wake, Never>) in
                var waiting = entry
                waiting.waiter = waiter
                let leads = queue.withLock { queue in
                    if Self.start(&queue, limit: concurrency) { return true }
                    queue.pending.append(waiting)
                    return false
                }
                if leads { waiter.resume(returning: .lead([entry])) }
            }
            switch wake {
            case .finished(let result): return try result.get()
            case .lead(let entries): group = entries
            }
        }
        // Run by this caller: cancelling it cannot fail the others' calls, as each round trip runs in a task of
        // its own (see `ConnectionRoundTrip`).
        let results = await run(group.map(\.request))
        let next = queue.withLock { queue in nextGroup(&queue) }
        if let next, let leader = next.first?.waiter {
            leader.resume(returning: .lead(next))
        }
        for (index, entry) in group.enumerated().dropFirst() {
            entry.waiter?.resume(returning: .finished(index < results.count ? results[index] : .failure(Self.missing)))
        }
        guard let own = results.first else { throw Self.missing }
        return try own.get()
    }

    /// The error of a call its group's runner left unanswered (a programming error).
    private static var missing: EventStoreError {
        EventStoreError(.storeFailure, "a grouped round trip returned no answer for a call")
    }

    /// Starts a group if the limit allows (then nobody is waiting: calls wait only at the limit).
    private static func start(_ queue: inout Queue, limit: Int) -> Bool {
        guard queue.inFlight < limit else { return false }
        queue.inFlight += 1
        return true
    }

    /// Ends a group: the next one, from the waiting calls, or `nil` (and one group fewer in flight).
    private func nextGroup(_ queue: inout Queue) -> [Entry]? {
        guard !queue.pending.isEmpty else {
            queue.inFlight -= 1
            return nil
        }
        var count = 0, weight = 0
        while count < queue.pending.count && count < maximumCount
            && (count == 0 || weight + queue.pending[count].weight <= maximumWeight) {
            weight += queue.pending[count].weight
            count += 1
        }
        let group = Array(queue.pending.prefix(count))
        queue.pending.removeFirst(count)
        return group
    }
}
