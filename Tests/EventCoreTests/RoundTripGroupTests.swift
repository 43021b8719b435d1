import EventCore
@testable import EventStorePostgres
import Testing

/// The grouping of the PostgreSQL store's round trips, without a database.
@Suite("Grouped round trips")
struct RoundTripGroupTests {
    struct Abandoned: Error {}

    /// A round trip whose answer never comes fails its calls after the time limit, and the calls behind it go on.
    @Test(.timeLimit(.minutes(1)))
    func aRoundTripWithoutAnswerIsAbandonedAndTheNextOnesGoOn() async throws {
        let group = RoundTripGroup<Int, Int>(concurrency: 1, maximumCount: 8, maximumWeight: 100, timeLimit: .milliseconds(300)) { Abandoned() }
        let lost = Task {
            try await group.submit(1) { requests in
                // An answer lost with its connection: this round trip never ends (until the test ends it).
                try? await Task.sleep(for: .seconds(3600))
                return requests.map { .success($0) }
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        // Calls made meanwhile wait for the slot, then go together once the lost round trip is given up.
        async let second = group.submit(2) { requests in requests.map { .success($0 * 10) } }
        async let third = group.submit(3) { requests in requests.map { .success($0 * 10) } }
        await #expect(throws: Abandoned.self) { try await lost.value }
        #expect(try await second == 20)
        #expect(try await third == 30)
        #expect(try await group.submit(4) { requests in requests.map { .success($0 * 10) } } == 40)
        #expect(group.waiting == 0)
        lost.cancel()
    }

    /// Each call of a group gets its own answer, failures included.
    @Test func eachCallOfAGroupGetsItsOwnAnswer() async throws {
        let group = RoundTripGroup<Int, Int>(concurrency: 1, maximumCount: 64, maximumWeight: 1000, timeLimit: .seconds(30))
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
