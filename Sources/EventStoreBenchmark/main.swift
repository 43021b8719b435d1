// EventStoreBenchmark: commands/s of a two-stream command (a transfer: debit one account, credit another) on
// every store at 1, 4 and 16 concurrent executors, and for PostgreSQL the ratio to pgbench running the same
// two-insert transaction at the same concurrency in the same run.
//
//   EventStoreBenchmark [bench] [--stores memory,sqlite,postgres] [--seconds 3] [--concurrency 1,4,16] [--accounts 5000]
//       [--round-trips N]   (PostgreSQL: appends and reads in flight at once before they are grouped; default 2)
//       [--cache-mib N]     (the executor's stream cache, as in a worker; default 16, 0 = none)
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
        let running = await client.startRunning()
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

func measure(store: any EventStore, accounts: Int, concurrency: Int, seconds: Int, cacheBytes: Int) async throws -> (rate: Double, statistics: TransferWorkload.Statistics) {
    let workload = TransferWorkload(accounts: accounts, openingBalance: 1_000_000)
    try await workload.openAccounts(in: store)
    let executor = CommandExecutor(store: store, configuration: conflictPolicy, cache: cacheBytes > 0 ? StreamCache(maximumBytes: cacheBytes) : nil)
    let deadline = ContinuousClock.now + .seconds(seconds)
    let started = ContinuousClock.now
    let statistics = await workload.run(executor: executor, tasks: concurrency, seed: UInt64(concurrency)) { ContinuousClock.now >= deadline }
    let seconds = (ContinuousClock.now - started).seconds
    guard statistics.failed == 0 else {
        throw BenchmarkFailure(description: "\(statistics.failed) transfers failed: \(statistics.failures)")
    }
    return (Double(statistics.committed + statistics.noOps) / seconds, statistics)
}

func bench(_ options: Options) async throws {
    let stores = options.list("stores", "memory,sqlite,postgres")
    let levels = options.list("concurrency", "1,4,16").compactMap(Int.init)
    let seconds = options.int("seconds", 3)
    let accounts = options.int("accounts", 5000)
    let cacheMiB = options.int("cache-mib", 16)
    print("two-stream transfer command, \(accounts) accounts, \(cacheMiB) MiB stream cache, \(seconds) s per measurement, \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(loadAverage())")
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
                let (rate, statistics) = try await measure(store: InMemoryEventStore(), accounts: accounts, concurrency: level, seconds: seconds, cacheBytes: cacheMiB << 20)
                row(storeName, level, rate, statistics.conflictsRetried)
            case "sqlite":
                let path = FileManager.default.temporaryDirectory.appendingPathComponent("eventcore-bench-\(UUID().uuidString).sqlite").path
                let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
                let (rate, statistics) = try await measure(store: store, accounts: accounts, concurrency: level, seconds: seconds, cacheBytes: cacheMiB << 20)
                try await store.close()
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
                row(storeName, level, rate, statistics.conflictsRetried)
            case "postgres":
                let (rate, conflicts, tps) = try await Database.withClient(connections: max(level, 2)) { client in
                    let schema = "bench_\(UInt32.random(in: 0...UInt32.max))"
                    var configuration = PostgresEventStore.Configuration(schema: schema)
                    if let roundTrips = options.values["round-trips"].flatMap(Int.init) { configuration.concurrentRoundTrips = roundTrips }
                    let store = try await PostgresEventStore.start(client: client, configuration: configuration)
                    let (rate, statistics) = try await measure(store: store, accounts: accounts, concurrency: level, seconds: seconds, cacheBytes: cacheMiB << 20)
                    try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema) CASCADE"))
                    let tps = try await PgBench.twoInsertTransactions(client: client, url: Database.url, concurrency: level, seconds: seconds, expectedRate: rate)
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
