import EventCore
import Synchronization

/// Group round trips: calls that arrive while `concurrency` groups are in flight wait, and go together in the
/// next group, which the first of them runs for all. A call that finds nothing in flight goes at once, alone, so
/// a lone caller never waits for company.
///
/// A group that would run beside others already in flight starts only once it has company: at least
/// `overlapFrom` calls, and as many as the groups in flight hold on average. Until then its calls wait for the
/// next group to end. Each round trip costs the server a fixed share besides its calls' (a transaction, a WAL
/// flush, the procedure's setup), so a second slot taken by every lone call as it comes costs more than the
/// overlap gains; taken by groups of the size the first slot carries, it keeps the server busy while the first
/// group's answer travels back and the next group is made. (`EventStoreBenchmark`, 4 executors, two slots:
/// about a tenth more commands per second than one slot; a second slot open to lone calls gained nothing.)
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
        /// The calls in the groups in flight.
        var inFlightCalls = 0
    }

    private let queue = Mutex(Queue())
    private let concurrency: Int
    private let overlapFrom: Int
    private let maximumCount: Int
    private let maximumWeight: Int

    /// - Parameters:
    ///   - concurrency: how many groups may be in flight at once.
    ///   - overlapFrom: the fewest calls a group starts with while another group is in flight.
    ///   - maximumCount: the most calls in one group.
    ///   - maximumWeight: a group stops growing once the weights of its calls reach this (one call may exceed it).
    ///
    /// A group's `run` must end: the slot it holds goes to the next group only then. (The store's round trips
    /// end with an answer, a lost connection or their time limit, see `ConnectionRoundTrip`.)
    init(concurrency: Int, overlapFrom: Int = 2, maximumCount: Int, maximumWeight: Int) {
        self.concurrency = max(1, concurrency)
        self.overlapFrom = max(1, overlapFrom)
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
        if let company = queue.withLock({ start(&$0, with: entry) }) {
            group = [entry] + company
        } else {
            let wake = await withCheckedContinuation { (waiter: CheckedContinuation<Wake, Never>) in
                var waiting = entry
                waiting.waiter = waiter
                let company = queue.withLock { queue -> [Entry]? in
                    if let company = start(&queue, with: entry) { return company }
                    queue.pending.append(waiting)
                    return nil
                }
                if let company { waiter.resume(returning: .lead([entry] + company)) }
            }
            switch wake {
            case .finished(let result): return try result.get()
            case .lead(let entries): group = entries
            }
        }
        // Run by this caller: cancelling it cannot fail the others' calls, as each round trip runs in a task of
        // its own (see `ConnectionRoundTrip`).
        let results = await run(group.map(\.request))
        let next = queue.withLock { queue in nextGroup(&queue, after: group.count) }
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

    /// Starts a group for `entry` if the limits allow: alone when nothing is in flight, else with the waiting calls
    /// once they and `entry` number at least ``overlapFrom`` and as many as the groups in flight hold on average.
    /// Returns the waiting calls it takes along, or `nil` to wait.
    private func start(_ queue: inout Queue, with entry: Entry) -> [Entry]? {
        guard queue.inFlight < concurrency else { return nil }
        if queue.inFlight == 0 {
            // Nothing in flight, so nobody is waiting: calls wait only behind a group in flight.
            queue.inFlight = 1
            queue.inFlightCalls = 1
            return []
        }
        guard queue.pending.count + 1 >= max(overlapFrom, queue.inFlightCalls / queue.inFlight) else { return nil }
        let company = take(from: &queue, joining: 1, weighing: entry.weight)
        queue.inFlight += 1
        queue.inFlightCalls += 1 + company.count
        return company
    }

    /// Ends a group of `count` calls: the next one, from the waiting calls, or `nil` (and one group fewer in flight).
    private func nextGroup(_ queue: inout Queue, after count: Int) -> [Entry]? {
        queue.inFlightCalls -= count
        guard !queue.pending.isEmpty else {
            queue.inFlight -= 1
            return nil
        }
        let next = take(from: &queue, joining: 0, weighing: 0)
        queue.inFlightCalls += next.count
        return next
    }

    /// Removes and returns the first waiting calls that fit in a group that already has `taken` calls weighing
    /// `weightSoFar`.
    private func take(from queue: inout Queue, joining taken: Int, weighing weightSoFar: Int) -> [Entry] {
        var count = 0, weight = weightSoFar
        while count < queue.pending.count && taken + count < maximumCount
            && (taken + count == 0 || weight + queue.pending[count].weight <= maximumWeight) {
            weight += queue.pending[count].weight
            count += 1
        }
        let group = Array(queue.pending.prefix(count))
        queue.pending.removeFirst(count)
        return group
    }
}
