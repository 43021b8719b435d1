import EventCore
import Synchronization
@testable import EventStorePostgres
import Testing

/// The grouping of the PostgreSQL store's round trips, without a database.
@Suite("Grouped round trips")
struct RoundTripGroupTests {
    struct Abandoned: Error {}

    /// Each call of a group gets its own answer, failures included.
    @Test func eachCallOfAGroupGetsItsOwnAnswer() async throws {
        let group = RoundTripGroup<Int, Int>(concurrency: 1, maximumCount: 64, maximumWeight: 1000)
        let results = try await withThrowingTaskGroup(of: (Int, Int?).self) { tasks in
            for value in 0..<50 {
                tasks.addTask {
                    let answer = try? await group.submit(value) { requests in
                        requests.map { $0 % 7 == 0 ? .failure(Abandoned()) : .success($0 + 1000) }
                    }
                    return (value, answer)
                }
            }
            var all: [Int: Int?] = [:]
            for try await (value, answer) in tasks { all[value] = answer }
            return all
        }
        for value in 0..<50 {
            #expect(results[value]! == (value % 7 == 0 ? nil : value + 1000), "call \(value)")
        }
    }
}

/// When a second group may start beside one in flight.
@Suite("Overlapping groups")
struct OverlappingGroupTests {
    /// A round trip held open until the test lets it go, recording the groups it was given.
    final class HeldRoundTrips: Sendable {
        private let state = Mutex<(groups: [[Int]], releases: [Int: CheckedContinuation<Void, Never>])>(([], [:]))

        /// The groups started so far, in order.
        var groups: [[Int]] { state.withLock { $0.groups } }

        func run(_ requests: [Int]) async -> [Result<Int, any Error>] {
            await withCheckedContinuation { continuation in
                state.withLock { state in
                    state.groups.append(requests)
                    state.releases[requests[0]] = continuation
                }
            }
            return requests.map { .success($0) }
        }

        /// Ends the group led by `leader`.
        func release(_ leader: Int) {
            let continuation = state.withLock { $0.releases.removeValue(forKey: leader) }
            continuation?.resume()
        }
    }

    /// Waits until `condition` holds (the calls under test run in tasks of their own).
    func eventually(_ condition: () -> Bool) async throws {
        for _ in 0..<2_000 where !condition() { try await Task.sleep(for: .milliseconds(1)) }
        #expect(condition())
    }

    /// A lone call goes at once; a call arriving while a group of one is in flight waits for company, and two
    /// calls together start a second group beside the first.
    @Test func aSecondGroupStartsOnlyWithCompany() async throws {
        let group = RoundTripGroup<Int, Int>(concurrency: 2, overlapFrom: 2, maximumCount: 64, maximumWeight: 1000)
        let held = HeldRoundTrips()
        let first = Task { try await group.submit(1) { await held.run($0) } }
        try await eventually { held.groups == [[1]] }
        let second = Task { try await group.submit(2) { await held.run($0) } }
        try await eventually { group.waiting == 1 }
        // The slot is free, but one call alone does not take it.
        try await Task.sleep(for: .milliseconds(50))
        #expect(held.groups == [[1]])
        let third = Task { try await group.submit(3) { await held.run($0) } }
        try await eventually { held.groups.count == 2 }
        #expect(held.groups[1].sorted() == [2, 3])
        #expect(group.waiting == 0)
        held.release(1)
        held.release(held.groups[1][0])
        #expect(try await first.value == 1)
        #expect(try await second.value == 2)
        #expect(try await third.value == 3)
    }

    /// Beside a group of four in flight, a second group starts only once four calls have gathered.
    @Test func aSecondGroupIsAsLargeAsTheOneInFlight() async throws {
        let group = RoundTripGroup<Int, Int>(concurrency: 2, overlapFrom: 2, maximumCount: 64, maximumWeight: 1000)
        let held = HeldRoundTrips()
        var calls: [Int: Task<Int, any Error>] = [:]
        func submit(_ value: Int) { calls[value] = Task { try await group.submit(value) { await held.run($0) } } }

        submit(0)
        try await eventually { held.groups.count == 1 }
        submit(1)
        try await eventually { group.waiting == 1 }
        submit(2)
        try await eventually { held.groups.count == 2 }
        // Both slots taken: four calls wait, and go together when the lone group ends.
        for value in 3...6 {
            submit(value)
            try await eventually { group.waiting == value - 2 }
        }
        held.release(0)
        try await eventually { held.groups.count == 3 }
        #expect(held.groups[2].sorted() == [3, 4, 5, 6])
        held.release(held.groups[1][0])
        #expect(try await calls[1]!.value == 1)
        // One group of four in flight: three calls are not enough for a second one, the fourth is.
        for value in 7...9 {
            submit(value)
            try await eventually { group.waiting == value - 6 }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(held.groups.count == 3)
        submit(10)
        try await eventually { held.groups.count == 4 }
        #expect(held.groups[3].sorted() == [7, 8, 9, 10])
        held.release(held.groups[2][0])
        held.release(held.groups[3][0])
        for value in 0...10 { #expect(try await calls[value]!.value == value) }
    }
}
