import EventCore
import EventCoreTestKit
import EventStorePostgres
import EventStoreSQLite
import Foundation
import Testing

/// Thousands of transfers between 20 accounts from 8 concurrent tasks, and from 2 OS processes: money is
/// conserved, no update is lost, conflicts are retried and counted.
@Suite("Concurrent transfers")
struct ConcurrencyTests {
    static let accounts = 20

    /// Runs the in-process load against `store` and checks every invariant.
    static func transfer(on store: any EventStore, commands: Int) async throws {
        let workload = TransferWorkload(accounts: accounts)
        try await workload.openAccounts(in: store)
        // Counts what the store itself reports, and yields before each append so tasks interleave even on
        // the in-memory store, whose operations never suspend.
        let counted = FaultInjectingEventStore(wrapping: store) { _ in await Task.yield() }
        let executor = CommandExecutor(
            store: counted,
            configuration: .init(retryPolicy: RetryPolicy(maxRetries: 200, backoff: .exponential(initial: .microseconds(100), multiplier: 2, maximum: .milliseconds(20))))
        )
        let statistics = await workload.run(executor: executor, commands: commands, tasks: 8, seed: 42)
        #expect(statistics.failed == 0, "failures: \(statistics.failures)")
        #expect(statistics.committed + statistics.noOps == commands)
        #expect(statistics.conflictsRetried == counted.statistics.storeConflicts)
        #expect(statistics.conflictsRetried > 0, "8 tasks on 20 accounts must collide")
        let audit = try await workload.audit(store)
        #expect(audit.total == workload.total)
        #expect(audit.withdrawals == statistics.committed)
        #expect(audit.transferDeposits == statistics.committed)
        #expect(audit.overdrawnAccounts == 0)
        #expect(audit.accountsWithVersionGaps == 0)
    }

    @Test("in memory: 8 tasks")
    func memory() async throws {
        try await Self.transfer(on: InMemoryEventStore(), commands: 3_000)
    }

    @Test("SQLite: 8 tasks")
    func sqlite() async throws {
        try await TestFiles.withSQLiteStore { store, _ in
            try await Self.transfer(on: store, commands: 2_000)
        }
    }

    @Test("PostgreSQL: 8 tasks")
    func postgres() async throws {
        try await PostgresEventStore.withTestStore { store in
            try await Self.transfer(on: store, commands: 2_000)
        }
    }

    // MARK: Two processes

    /// The helper executable, built next to the test bundle.
    static func workerExecutable() throws -> URL {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("EventStoreBenchmark")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw TestFailure("EventStoreBenchmark not found next to \(CommandLine.arguments[0]); build all targets first")
    }

    struct TestFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Starts the worker twice at once and returns the statistics each printed.
    static func runTwoWorkers(store: String, target: String, commandsEach: Int) async throws -> [TransferWorkload.Statistics] {
        let executable = try workerExecutable()
        var processes: [(Process, Pipe, Task<Int32, Never>)] = []
        for seed in 1...2 {
            let process = Process()
            process.executableURL = executable
            process.arguments = [
                "transfer-worker", "--store", store, "--target", target, "--accounts", "\(accounts)",
                "--commands", "\(commandsEach)", "--tasks", "4", "--seed", "\(seed)",
            ]
            let output = Pipe()
            process.standardOutput = output
            // The exit is awaited through the termination handler, so no test thread blocks on the child.
            let (exited, continuation) = AsyncStream.makeStream(of: Int32.self)
            process.terminationHandler = { finished in
                continuation.yield(finished.terminationStatus)
                continuation.finish()
            }
            try process.run()
            let status = Task { await exited.first { _ in true } ?? -1 }
            processes.append((process, output, status))
        }
        // Whatever happens below, no worker outlives the test.
        defer { for (process, _, _) in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        var results: [TransferWorkload.Statistics] = []
        for (process, output, status) in processes {
            // A worker that has not finished after ten minutes is stuck: it is killed, and the test fails
            // instead of waiting forever.
            let code = await withTaskGroup(of: Int32?.self) { group in
                group.addTask { await status.value }
                group.addTask {
                    try? await Task.sleep(for: .seconds(600))
                    if Task.isCancelled { return nil }
                    kill(process.processIdentifier, SIGKILL)
                    return nil
                }
                var code: Int32?
                for await finished in group {
                    if let finished {
                        code = finished
                        group.cancelAll()
                    }
                }
                return code ?? -1
            }
            guard code == 0 else { throw TestFailure("worker exited with status \(code)") }
            // The worker has exited, so its output is complete and reading it does not wait.
            let data = output.fileHandleForReading.readDataToEndOfFile()
            results.append(try JSONDecoder().decode(TransferWorkload.Statistics.self, from: data))
        }
        return results
    }

    static func checkTwoProcessRun(_ results: [TransferWorkload.Statistics], store: any EventStore, commandsEach: Int) async throws {
        var total = TransferWorkload.Statistics()
        for result in results {
            #expect(result.committed + result.noOps == commandsEach)
            total.add(result)
        }
        #expect(total.failed == 0, "failures: \(total.failures)")
        #expect(total.conflictsRetried > 0, "8 executors in 2 processes on 20 accounts must collide")
        let workload = TransferWorkload(accounts: accounts)
        let audit = try await workload.audit(store)
        #expect(audit.total == workload.total)
        #expect(audit.withdrawals == total.committed)
        #expect(audit.transferDeposits == total.committed)
        #expect(audit.overdrawnAccounts == 0)
        #expect(audit.accountsWithVersionGaps == 0)
    }

    @Test("SQLite: 2 processes on one file")
    func sqliteTwoProcesses() async throws {
        let path = TestFiles.databasePath()
        defer { TestFiles.remove(path) }
        let setup = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
        try await TransferWorkload(accounts: Self.accounts).openAccounts(in: setup)
        try await setup.close()
        let results = try await Self.runTwoWorkers(store: "sqlite", target: path, commandsEach: 1_000)
        let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
        do {
            try await Self.checkTwoProcessRun(results, store: store, commandsEach: 1_000)
            try await store.close()
        } catch {
            try? await store.close()
            throw error
        }
    }

    @Test("PostgreSQL: 2 processes on one schema")
    func postgresTwoProcesses() async throws {
        try await PostgresEventStore.withTestStore { store in
            try await TransferWorkload(accounts: Self.accounts).openAccounts(in: store)
            let results = try await Self.runTwoWorkers(store: "postgres", target: store.configuration.schema, commandsEach: 1_000)
            try await Self.checkTwoProcessRun(results, store: store, commandsEach: 1_000)
        }
    }
}
