@testable import Fleet
import Synchronization
import Testing

/// The time limits of messages in hand: one watcher for all of them instead of a timer each.
@Suite("Deadlines of the messages in hand")
struct DeadlinesTests {
    final class Expired: Sendable {
        let names = Mutex<[String]>([])
        func add(_ name: String) { names.withLock { $0.append(name) } }
        var all: [String] { names.withLock { $0.sorted() } }
    }

    @Test func onlyPassedDeadlinesNotRemovedExpireAndEachOnce() {
        let deadlines = Deadlines(tick: .milliseconds(10))
        let expired = Expired()
        let start = ContinuousClock.now
        _ = deadlines.add(start + .seconds(1)) { expired.add("one") }
        let removed = deadlines.add(start + .seconds(1)) { expired.add("removed") }
        _ = deadlines.add(start + .seconds(5)) { expired.add("five") }
        deadlines.remove(removed)
        #expect(deadlines.count == 2)
        deadlines.expire(asOf: start + .milliseconds(999))
        #expect(expired.all.isEmpty)
        deadlines.expire(asOf: start + .seconds(1))
        deadlines.expire(asOf: start + .seconds(2))
        #expect(expired.all == ["one"])
        deadlines.expire(asOf: start + .seconds(6))
        #expect(expired.all == ["five", "one"])
        #expect(deadlines.count == 0)
    }

    @Test(.timeLimit(.minutes(1)))
    func theWatcherExpiresDeadlinesAsTheyPassAndStopsWhenCancelled() async throws {
        let deadlines = Deadlines(tick: .milliseconds(20))
        let watcher = Task { await deadlines.watch() }
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        _ = deadlines.add(.now + .milliseconds(50)) { continuation.yield("soon") }
        let kept = deadlines.add(.now + .milliseconds(50)) { continuation.yield("removed") }
        deadlines.remove(kept)
        var iterator = stream.makeAsyncIterator()
        #expect(await iterator.next() == "soon")
        #expect(deadlines.count == 0)
        watcher.cancel()
        await watcher.value
    }
}
