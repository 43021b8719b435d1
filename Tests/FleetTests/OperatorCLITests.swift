import AMQP
import EventCore
import Fleet
import FleetSimulation
import FleetTestSupport
import Foundation
import Logging
import Testing

/// `fleet process`, `fleet timeouts` and `fleet replay store` run as child processes, as an operator runs them.
@Suite("Operator commands as child processes", .serialized, .timeLimit(.minutes(10)))
struct OperatorCLITests {
    typealias Fleet = FleetEndToEndTests.Fleet

    /// Runs `fleet` with `arguments`, without the FLEET_* settings of the test's own environment.
    static func fleet(_ arguments: [String]) async throws -> ChildProcess.Outcome {
        var environment = ProcessInfo.processInfo.environment
        for key in environment.keys where key.hasPrefix("FLEET_") && key != "FLEET_RUN_DIR" { environment[key] = nil }
        let outcome = try await ChildProcess.run(Fleet.executable, arguments, environment: environment, timeout: .seconds(120))
        #expect(!outcome.timedOut, "fleet \(arguments.joined(separator: " ")) ran past its deadline")
        return outcome
    }

    /// Runs `fleet` and decodes its standard output (the only output of a `--json` command that succeeds).
    static func json<T: Decodable>(_ type: T.Type, _ arguments: [String]) async throws -> T {
        let outcome = try await fleet(arguments)
        try #require(outcome.exited && outcome.status == 0, "fleet \(arguments.joined(separator: " ")): \(outcome.status) \(outcome.output)")
        return try OperatorJSON.decode(type, outcome.standardOutput)
    }

    /// Expects `fleet` to fail with exit status 1 and `error: <message>`.
    static func expectFailure(_ arguments: [String], _ message: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let outcome = try await fleet(arguments)
        #expect(outcome.exited && outcome.status == 1, "fleet \(arguments.joined(separator: " ")): \(outcome.status) \(outcome.output)",
                sourceLocation: sourceLocation)
        #expect(outcome.output.contains("error: ") && outcome.output.contains(message), "\(outcome.output)", sourceLocation: sourceLocation)
    }

    @Test(arguments: ProcessFixture.Store.allCases)
    func processListShowAndRetryOnAStoreWithRealProcesses(store kind: ProcessFixture.Store) async throws {
        let path = kind.makeURL("fleet-cli-process")
        defer { kind.remove(path) }
        try await ProcessFixture.populate(path)
        let store = ["--store", path]

        let all = try await Self.json([ProcessRow].self, ["process", "list", "--json"] + store)
        #expect(Set(all.map(\.processID)) == Set(ProcessFixture.all))
        #expect(all.map(\.startedAt) == all.map(\.startedAt).sorted(), "oldest first")
        #expect(all.first { $0.processID == ProcessFixture.failedOrder }?.state == "failed: payment failed: declined")
        #expect(all.first { $0.processID == ProcessFixture.completedTrip }?.state == "completed")
        #expect(all.first { $0.processID == ProcessFixture.runningOrders[0] }?.pendingTimeout != nil)
        #expect(try await Self.json([ProcessRow].self, ["process", "list", "--state", "running", "--json"] + store).map(\.processID).sorted()
            == (ProcessFixture.runningOrders + [ProcessFixture.stuckTrip]).sorted(), "running includes needing attention")
        #expect(try await Self.json([ProcessRow].self, ["process", "list", "--state", "needsAttention", "--json"] + store).map(\.processID)
            == [ProcessFixture.stuckTrip])
        #expect(try await Self.json([ProcessRow].self, ["process", "list", "--type", "order-fulfillment", "--state", "failed", "--json"] + store)
            .map(\.processID) == [ProcessFixture.failedOrder])
        let text = try await Self.fleet(["process", "list"] + store)
        #expect(text.status == 0 && text.output.contains("5 process(es)") && text.output.contains(ProcessFixture.stuckTrip))

        let detail = try await Self.json(ProcessDetail.self, ["process", "show", ProcessFixture.stuckTrip, "--json"] + store)
        #expect(detail.process.processType == "travel-booking" && detail.process.businessID == "trip-stuck")
        #expect(detail.step == "SagaNeedsAttention")
        #expect(detail.history.first?.eventType == "ProcessStarted")
        #expect(detail.history.map(\.version) == Array(1...detail.history.count))
        let order = try await Self.json(ProcessDetail.self, ["process", "show", ProcessFixture.runningOrders[1], "--json"] + store)
        #expect(order.process.pendingTimeout?.processID == ProcessFixture.runningOrders[1])
        let shown = try await Self.fleet(["process", "show", ProcessFixture.runningOrders[1]] + store)
        #expect(shown.status == 0 && shown.output.contains("state:     running") && shown.output.contains("history:"))

        // Bad input: a clear message, exit 1, nothing changed.
        try await Self.expectFailure(["process", "list", "--state", "sleeping"] + store, "unknown state \"sleeping\": use running, needsAttention, completed, failed")
        try await Self.expectFailure(["process", "show", "order-fulfillment-nobody"] + store, "no process \"order-fulfillment-nobody\" in the store")
        try await Self.expectFailure(["process", "retry", "order-fulfillment-nobody"] + store, "no process \"order-fulfillment-nobody\"")
        try await Self.expectFailure(["process", "retry", ProcessFixture.completedTrip] + store, "only a saga that needs attention can be retried")
        let missing = ProcessFixture.temporaryStorePath("fleet-cli-missing")
        try await Self.expectFailure(["process", "list", "--store", missing], "no event store at \(missing)")
        try await Self.expectFailure(["process", "list", "--store", "postgres://fleet:fleet@127.0.0.1:1/fleet?schema=nowhere"], "cannot open the event store")
        #expect(try await Self.json([ProcessRow].self, ["process", "list", "--state", "needsAttention", "--json"] + store).count == 1)

        // The retry compensates the stuck trip, and a second retry is refused.
        let retried = try await Self.json(ProcessRetryReport.self, ["process", "retry", ProcessFixture.stuckTrip, "--by", "cli-test", "--json"] + store)
        #expect(retried.process == ProcessFixture.stuckTrip && retried.phase == "compensated" && retried.state.hasPrefix("failed"))
        let after = try await Self.json(ProcessDetail.self, ["process", "show", ProcessFixture.stuckTrip, "--json"] + store)
        #expect(after.history.contains { $0.eventType == "CompensationResumed" && $0.payload.contains("cli-test") })
        try await Self.expectFailure(["process", "retry", ProcessFixture.stuckTrip] + store, "only a saga that needs attention")
    }

    @Test func timeoutsListAndCancel() async throws {
        let path = ProcessFixture.temporaryStorePath("fleet-cli-timeouts")
        defer { ProcessFixture.removeStore(path) }
        try await ProcessFixture.populate(path)
        let store = ["--store", path]

        let pending = try await Self.json([PendingTimeoutRow].self, ["timeouts", "list", "--json"] + store)
        #expect(Set(pending.map(\.processID)) == Set(ProcessFixture.runningOrders))
        #expect(pending.map(\.dueAt) == pending.map(\.dueAt).sorted(), "earliest first")
        #expect(pending.allSatisfy { $0.attempt == 0 && $0.dueAt > Date() })
        let text = try await Self.fleet(["timeouts", "list"] + store)
        #expect(text.status == 0 && text.output.contains("2 pending timeout(s)"))

        try await Self.expectFailure(["timeouts", "cancel", "no-such-timeout"] + store, "no pending timeout \"no-such-timeout\"")
        try await Self.expectFailure(["timeouts", "cancel", ProcessFixture.failedOrder] + store, "no pending timeout")
        try await Self.expectFailure(["timeouts", "list", "--store", path + ".missing"], "no event store at")
        #expect(try await Self.json([PendingTimeoutRow].self, ["timeouts", "list", "--json"] + store).count == 2, "nothing cancelled")

        // By timeout id, then by process id.
        let cancelled = try await Self.json(PendingTimeoutRow.self, ["timeouts", "cancel", pending[0].timeoutID, "--json"] + store)
        #expect(cancelled == pending[0])
        let byProcess = try await Self.fleet(["timeouts", "cancel", pending[1].processID] + store)
        #expect(byProcess.status == 0 && byProcess.output.contains("cancelled timeout \(pending[1].timeoutID) of process \(pending[1].processID)"))
        #expect(try await Self.json([PendingTimeoutRow].self, ["timeouts", "list", "--json"] + store).isEmpty)
        let order = try await Self.json(ProcessDetail.self, ["process", "show", pending[0].processID, "--json"] + store)
        #expect(order.process.pendingTimeout == nil && order.history.last?.eventType == "TimeoutCancelled")
        try await Self.expectFailure(["timeouts", "cancel", pending[0].timeoutID] + store, "no pending timeout")
    }

    /// SIGINT stops `fleet replay store` after the batch in flight, leaving a checkpoint; the same command
    /// run again finishes, and the target receives every event once.
    @Test func aStoreReplayStoppedBySIGINTResumesWithoutGapsOrDuplicates() async throws {
        let total = 600
        let path = ProcessFixture.temporaryStorePath("fleet-cli-replay")
        let checkpoint = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-cli-replay-\(UUID().uuidString).checkpoint")
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-cli-replay-\(UUID().uuidString).log")
        defer {
            ProcessFixture.removeStore(path)
            try? FileManager.default.removeItem(at: checkpoint)
            try? FileManager.default.removeItem(at: log)
        }
        let source = try await OperationsReplayTests.announcementStore(path, count: total)
        let stored = Set(try await OperationsReplayTests.allEvents(source.store).map(\.id.description))
        await source.close()
        #expect(stored.count == total)

        let connection = try await TestBroker.connect()
        let (exchange, queue) = try await OperationsReplayTests.declareReplayTarget("cli.replay", on: connection)
        defer { OperationsReplayTests.removeReplayTarget((exchange, queue), connection: connection) }
        let arguments = ["replay", "store", "--amqp-url", TestBroker.url, "--store", path, "--from-position", "1", "--to", exchange,
                         "--checkpoint", checkpoint.path]

        // 100 events a second: six seconds of work, interrupted once the first batches are confirmed.
        let child = Process()
        child.executableURL = Fleet.executable
        child.arguments = arguments + ["--rate", "100"]
        var environment = ProcessInfo.processInfo.environment
        for key in environment.keys where key.hasPrefix("FLEET_") && key != "FLEET_RUN_DIR" { environment[key] = nil }
        child.environment = environment
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        child.standardOutput = handle
        child.standardError = handle
        try child.run()
        let started = try await TestBroker.eventually(60) {
            ((try? ReplayCheckpoint.load(from: checkpoint))?.published ?? 0) >= 100
        }
        try #require(started, "no checkpoint: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        kill(child.processIdentifier, SIGINT)
        let killed = await ChildProcess.waitForExit(child, timeout: .seconds(30))
        try? handle.close()
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(!killed, "SIGINT did not stop the replay: \(output)")
        #expect(child.terminationReason == .exit && child.terminationStatus == 130, "\(child.terminationStatus): \(output)")
        #expect(output.contains("interrupted: finishing the batch in flight"), "\(output)")
        let saved = try #require(try ReplayCheckpoint.load(from: checkpoint))
        #expect(!saved.finished)
        #expect(saved.published >= 100 && saved.published < total, "stopped midway: \(saved.published) of \(total)")
        #expect(saved.lastConfirmedPosition == saved.published, "positions are dense in a store with only these events")

        // The same command again (without the rate) resumes after the checkpoint and finishes.
        let second = try await Self.fleet(arguments + ["--json"])
        #expect(second.exited && second.status == 0, "\(second.output)")
        #expect(second.output.contains("resuming after position \(saved.lastConfirmedPosition)"), "\(second.output)")
        let finished = try #require(try ReplayCheckpoint.load(from: checkpoint))
        #expect(finished.finished && finished.published == total)

        let ids = try await OperationsReplayTests.receivedMessageIDs(connection, queue: queue, expected: total)
        #expect(ids.count == total, "every event exactly once: \(ids.count) received")
        #expect(Set(ids).count == ids.count, "no duplicate")
        #expect(Set(ids) == stored, "no gap")
    }
}
