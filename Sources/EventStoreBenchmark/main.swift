// EventStoreBenchmark: commands/s of a two-stream command (a transfer: debit one account, credit another) on
// every store at 1, 4 and 16 concurrent executors, and for PostgreSQL the ratio to pgbench running the same
// two-insert transaction at the same concurrency in the same run.
//
//   EventStoreBenchmark [bench] [--stores memory,sqlite,postgres] [--seconds 3] [--concurrency 1,4,16] [--accounts 5000]
//   EventStoreBenchmark transfer-worker --store sqlite|postgres --target PATH|SCHEMA --accounts N --commands N
//       --tasks N --seed N      (runs transfers against an existing store and prints its statistics as JSON)
//
// PostgreSQL is reached through POSTGRES_URL (default postgres://fleet:fleet@127.0.0.1:5432/fleet); pgbench is
// looked up in PGBENCH, /usr/lib/postgresql/*/bin and PATH.

import EventCore
import EventCoreTestKit
import EventStorePostgres
import EventStoreSQLite
import Foundation
import Logging
import PostgresNIO
import Synchronization

struct Options {
    var command = "bench"
    var values: [String: String] = [:]

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst()
        if let first = rest.first, !first.hasPrefix("--") {
            command = first
            rest = rest.dropFirst()
        }
        while let flag = rest.first {
            rest = rest.dropFirst()
            guard flag.hasPrefix("--") else { continue }
            values[String(flag.dropFirst(2))] = rest.first ?? ""
            rest = rest.dropFirst()
        }
    }

    func string(_ name: String, _ fallback: String) -> String { values[name] ?? fallback }
    func int(_ name: String, _ fallback: Int) -> Int { values[name].flatMap(Int.init) ?? fallback }
    func list(_ name: String, _ fallback: String) -> [String] { string(name, fallback).split(separator: ",").map(String.init) }
}

struct BenchmarkFailure: Error, CustomStringConvertible {
    var description: String
}

enum Database {
    static let url = ProcessInfo.processInfo.environment["POSTGRES_URL"] ?? "postgres://fleet:fleet@127.0.0.1:5432/fleet"

    static func configuration(connections: Int) -> PostgresClient.Configuration {
        let components = URLComponents(string: url)
        var configuration = PostgresClient.Configuration(
            host: components?.host ?? "127.0.0.1", port: components?.port ?? 5432,
            username: components?.user ?? "fleet", password: components?.password ?? "fleet",
            database: String((components?.path ?? "/fleet").dropFirst()), tls: .disable
        )
        configuration.options.maximumConnections = connections
        configuration.options.minimumConnections = 0
        return configuration
    }

    /// Runs `body` with a running client. The client's run task is cancelled, not awaited, at the end: a pool
    /// whose server went away meanwhile may take long to wind down, and the caller is about to exit anyway.
    static func withClient<T: Sendable>(connections: Int, _ body: @Sendable @escaping (PostgresClient) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: configuration(connections: connections), backgroundLogger: Logger(label: "benchmark.postgres"))
        let running = Task { await client.run() }
        defer { running.cancel() }
        return try await body(client)
    }
}

let conflictPolicy = CommandExecutor.Configuration(
    retryPolicy: RetryPolicy(maxRetries: 100, backoff: .exponential(initial: .milliseconds(1), multiplier: 2, maximum: .milliseconds(50)))
)

// MARK: transfer-worker

func transferWorker(_ options: Options) async throws {
    let workload = TransferWorkload(accounts: options.int("accounts", 20))
    let commands = options.int("commands", 1000)
    let tasks = options.int("tasks", 4)
    let seed = UInt64(options.int("seed", 1))
    let target = options.string("target", "")
    let statistics: TransferWorkload.Statistics
    switch options.string("store", "sqlite") {
    case "sqlite":
        let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: target))
        statistics = await workload.run(executor: CommandExecutor(store: store, configuration: conflictPolicy), commands: commands, tasks: tasks, seed: seed)
        try await store.close()
    case "postgres":
        statistics = try await Database.withClient(connections: tasks + 1) { client in
            let store = try PostgresEventStore(client: client, configuration: PostgresEventStore.Configuration(schema: target))
            return await workload.run(executor: CommandExecutor(store: store, configuration: conflictPolicy), commands: commands, tasks: tasks, seed: seed)
        }
    default:
        throw BenchmarkFailure(description: "unknown store \(options.string("store", ""))")
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    print(String(decoding: try encoder.encode(statistics), as: UTF8.self))
}

// MARK: bench

func measure(store: any EventStore, accounts: Int, concurrency: Int, seconds: Int) async throws -> (rate: Double, statistics: TransferWorkload.Statistics) {
    let workload = TransferWorkload(accounts: accounts, openingBalance: 1_000_000)
    try await workload.openAccounts(in: store)
    let executor = CommandExecutor(store: store, configuration: conflictPolicy)
    let deadline = ContinuousClock.now + .seconds(seconds)
    let started = ContinuousClock.now
    let statistics = await workload.run(executor: executor, tasks: concurrency, seed: UInt64(concurrency)) { ContinuousClock.now >= deadline }
    let elapsed = ContinuousClock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    guard statistics.failed == 0 else {
        throw BenchmarkFailure(description: "\(statistics.failed) transfers failed: \(statistics.failures)")
    }
    return (Double(statistics.committed + statistics.noOps) / seconds, statistics)
}

func pgbenchPath() -> String? {
    if let path = ProcessInfo.processInfo.environment["PGBENCH"] { return path }
    let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
        .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        .map { "/usr/lib/postgresql/\($0)/bin/pgbench" }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// pgbench's transactions/s for two inserts into a table shaped like the events table, at `concurrency` clients.
///
/// pgbench runs a fixed number of transactions (`-t`) sized to last about as long as the store's measurement:
/// a child of this process inherits a signal mask that blocks the alarm `-T` relies on.
func pgbench(client: PostgresClient, concurrency: Int, seconds: Int, expectedRate: Double) async throws -> Double {
    guard let pgbench = pgbenchPath() else { throw BenchmarkFailure(description: "pgbench not found") }
    let schema = "bench_pgbench_\(UInt32.random(in: 0...UInt32.max))"
    try await client.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA \(schema)"))
    try await client.query(PostgresQuery(unsafeSQL: """
        CREATE TABLE \(schema).events (
            global_position bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
            stream_id text NOT NULL, stream_version int8 NOT NULL, event_type text NOT NULL, payload bytea NOT NULL,
            correlation_id text, causation_id text, source_message_id text, traceparent text,
            recorded_at_us int8 NOT NULL, UNIQUE (stream_id, stream_version))
        """))
    try await client.query(PostgresQuery(unsafeSQL: "CREATE INDEX ON \(schema).events (event_type, global_position)"))
    try await client.query(PostgresQuery(unsafeSQL: "CREATE INDEX ON \(schema).events (recorded_at_us)"))
    let script = FileManager.default.temporaryDirectory.appendingPathComponent("\(schema).sql")
    try """
        \\set a random(1, 1000000)
        \\set b random(1, 1000000)
        \\set v random(1, 1000000000)
        BEGIN;
        INSERT INTO \(schema).events (stream_id, stream_version, event_type, payload, recorded_at_us) VALUES ('account-' || :a, :v, 'MoneyWithdrawn', '\\x7b22776974686472617765',  1);
        INSERT INTO \(schema).events (stream_id, stream_version, event_type, payload, recorded_at_us) VALUES ('account-' || :b, :v, 'MoneyDeposited', '\\x7b226465706f7369746564',  1);
        END;

        """.write(to: script, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: script) }

    let transactions = max(100, Int(expectedRate * Double(seconds) / Double(concurrency)))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: pgbench)
    process.arguments = ["-n", "-M", "prepared", "-c", "\(concurrency)", "-j", "\(min(concurrency, 2))", "-t", "\(transactions)", "-f", script.path, Database.url]
    let output = Pipe()
    process.standardOutput = output
    process.standardError = FileHandle.nullDevice
    let (exited, continuation) = AsyncStream.makeStream(of: Int32.self)
    process.terminationHandler = { finished in
        continuation.yield(finished.terminationStatus)
        continuation.finish()
    }
    try process.run()
    // pgbench prints a few lines only, well within the pipe's buffer, so it never waits for this reader.
    let status = await exited.first { _ in true } ?? -1
    let data = output.fileHandleForReading.readDataToEndOfFile()
    try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema) CASCADE"))
    let text = String(decoding: data, as: UTF8.self)
    guard status == 0,
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
          let tps = Double(line.dropFirst(6).prefix { $0 != " " })
    else {
        throw BenchmarkFailure(description: "pgbench failed (status \(status)): \(text.suffix(500))")
    }
    return tps
}

func bench(_ options: Options) async throws {
    let stores = options.list("stores", "memory,sqlite,postgres")
    let levels = options.list("concurrency", "1,4,16").compactMap(Int.init)
    let seconds = options.int("seconds", 3)
    let accounts = options.int("accounts", 5000)
    print("two-stream transfer command, \(accounts) accounts, \(seconds) s per measurement, \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(loadAverage())")
    print("store       executors   commands/s   conflicts retried   pgbench tps   ratio")
    func row(_ store: String, _ level: Int, _ rate: Double, _ conflicts: Int, _ pgbench: Double? = nil) {
        let base = "\(store.padding(toLength: 12, withPad: " ", startingAt: 0))\(String(level).leftPadded(9))   \(String(format: "%10.0f", rate))   \(String(conflicts).leftPadded(17))"
        if let pgbench {
            print(base + "   \(String(format: "%11.0f", pgbench))   \(String(format: "%5.2f", rate / pgbench))")
        } else {
            print(base)
        }
    }
    for storeName in stores {
        for level in levels {
            switch storeName {
            case "memory":
                let (rate, statistics) = try await measure(store: InMemoryEventStore(), accounts: accounts, concurrency: level, seconds: seconds)
                row(storeName, level, rate, statistics.conflictsRetried)
            case "sqlite":
                let path = FileManager.default.temporaryDirectory.appendingPathComponent("eventcore-bench-\(UUID().uuidString).sqlite").path
                let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
                let (rate, statistics) = try await measure(store: store, accounts: accounts, concurrency: level, seconds: seconds)
                try await store.close()
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
                row(storeName, level, rate, statistics.conflictsRetried)
            case "postgres":
                let (rate, conflicts, tps) = try await Database.withClient(connections: max(level, 2)) { client in
                    let schema = "bench_\(UInt32.random(in: 0...UInt32.max))"
                    let store = try await PostgresEventStore.start(client: client, configuration: PostgresEventStore.Configuration(schema: schema))
                    let (rate, statistics) = try await measure(store: store, accounts: accounts, concurrency: level, seconds: seconds)
                    try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema) CASCADE"))
                    let tps = try await pgbench(client: client, concurrency: level, seconds: seconds, expectedRate: rate)
                    return (rate, statistics.conflictsRetried, tps)
                }
                row(storeName, level, rate, conflicts, tps)
            default:
                throw BenchmarkFailure(description: "unknown store \(storeName)")
            }
        }
    }
    print("load at the end: \(loadAverage())")
}

/// The 1-minute load average, so figures taken on a busy machine can be read as such.
func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.map(String.init) ?? "unknown"
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

let options = Options(CommandLine.arguments)
do {
    switch options.command {
    case "transfer-worker": try await transferWorker(options)
    case "bench": try await bench(options)
    default: throw BenchmarkFailure(description: "unknown command \(options.command); use bench or transfer-worker")
    }
} catch {
    FileHandle.standardError.write(Data("EventStoreBenchmark: \(error)\n".utf8))
    exit(1)
}
