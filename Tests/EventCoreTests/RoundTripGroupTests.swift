import EventCore
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
