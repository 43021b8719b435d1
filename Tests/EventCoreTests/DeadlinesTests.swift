import EventCore
import Synchronization
import Testing

/// Time limits of many operations: one watcher for all of them instead of a timer each.
@Suite("Deadlines of operations in flight")
struct DeadlinesTests {
    final class Expired: Sendable {
        let names = Mutex<[String]>([])
        func add(_ name: String) { names.withLock { $0.append(name) } }
        var all: [String] { names.withLock { $0.sorted() } }
    }

    @Test func onlyPassedDeadlinesNotRemovedExpireAndEachOnce() {
        let deadlines = Deadlines(tick: .seconds(3600))
        let expired = Expired()
        let start = ContinuousClock.now
        _ = deadlines.add(start + .seconds(1)) { expired.add("one") }
        let removed = deadlines.add(start + .seconds(1)) { expired.add("removed") }
        _ = deadlines.add(start + .seconds(5)) { expired.add("five") }
        deadlines.remove(removed)
        #expect(deadlines.count == 2)
        #expect(!deadlines.expire(asOf: start + .milliseconds(999)))
        #expect(expired.all.isEmpty)
        deadlines.expire(asOf: start + .seconds(1))
        deadlines.expire(asOf: start + .seconds(2))
        #expect(expired.all == ["one"])
        #expect(deadlines.expire(asOf: start + .seconds(6)), "none is left")
        #expect(expired.all == ["five", "one"])
        #expect(deadlines.count == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func theWatcherExpiresDeadlinesAsTheyPassStopsWhenNoneIsLeftAndStartsAgain() async throws {
        let deadlines = Deadlines(tick: .milliseconds(20))
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        var arrivals = stream.makeAsyncIterator()
        _ = deadlines.add(.now + .milliseconds(50)) { continuation.yield("first") }
        let kept = deadlines.add(.now + .milliseconds(50)) { continuation.yield("removed") }
        deadlines.remove(kept)
        #expect(await arrivals.next() == "first")
        #expect(deadlines.count == 0)
        // The watcher ends once nothing is pending (a tick later); a new deadline starts another.
        try await Task.sleep(for: .milliseconds(100))
        _ = deadlines.add(.now + .milliseconds(30)) { continuation.yield("second") }
        #expect(await arrivals.next() == "second")
    }
}
