// EventStoreBenchmark: commands/s of a two-stream command (a transfer: debit one account, credit another) on
// every store at 1, 4 and 16 concurrent executors, and for PostgreSQL the ratio to pgbench running the same
// two-insert transaction at the same concurrency in the same run.
//
//   EventStoreBenchmark [bench] [--stores memory,sqlite,postgres] [--seconds 3] [--concurrency 1,4,16] [--accounts 5000]
//       [--round-trips N]   (PostgreSQL: appends and reads in flight at once before they are grouped; default 2)
//       [--cache-mib N]     (the executor's stream cache; default 64, enough for the accounts' whole history; 0 = none)
//       [--warm-up S]       (seconds of the same load before each measurement, on the same executor; default 2)
//       [--event-loops N]   (PostgreSQL: a client event loop group of N loops; default PostgresURL.eventLoopGroup, one loop, as a worker)
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
import NIOPosix


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
        PostgresURL.tuneForEventStore(&configuration)
        return configuration
    }

    /// Runs `body` with a running client. The client's run task is cancelled, not awaited, at the end: a pool
    /// whose server went away meanwhile may take long to wind down, and the caller is about to exit anyway.
    static func withClient<T: Sendable>(connections: Int, group: any EventLoopGroup = PostgresClient.defaultEventLoopGroup, _ body: @Sendable @escaping (PostgresClient) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: configuration(connections: connections), eventLoopGroup: group, backgroundLogger: Logger(label: "benchmark.postgres"))
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
            let store = try await PostgresEventStore.start(client: client, configuration: PostgresEventStore.Configuration(schema: target))
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

/// One measurement: commands per second, and the CPU time per command of this process and of the database's
/// processes (PostgreSQL's, when they run on this machine).
struct Measurement: Sendable {
    var rate: Double
    var statistics: TransferWorkload.Statistics
    /// The share of commands decided on cached streams without reading them.
    var readsSkipped: Double
    var clientMicroseconds: Double
    var databaseMicroseconds: Double?
}

func measure(store: any EventStore, accounts: Int, concurrency: Int, seconds: Int, warmUp: Int, cacheBytes: Int) async throws -> Measurement {
    let workload = TransferWorkload(accounts: accounts, openingBalance: 1_000_000)
    try await workload.openAccounts(in: store)
    let executor = CommandExecutor(store: store, configuration: conflictPolicy, cache: cacheBytes > 0 ? StreamCache(maximumBytes: cacheBytes) : nil)
    if warmUp > 0 {
        let warmUntil = ContinuousClock.now + .seconds(warmUp)
        let warming = await workload.run(executor: executor, tasks: concurrency, seed: UInt64(concurrency) &+ 7919) { ContinuousClock.now >= warmUntil }
        guard warming.failed == 0 else {
            throw BenchmarkFailure(description: "\(warming.failed) transfers failed while warming up: \(warming.failures)")
        }
    }
    let skippedBefore = executor.cache?.statistics.readsSkipped ?? 0
    let deadline = ContinuousClock.now + .seconds(seconds)
    let started = ContinuousClock.now
    let cpu = CPUTime.sample()
    let statistics = await workload.run(executor: executor, tasks: concurrency, seed: UInt64(concurrency)) { ContinuousClock.now >= deadline }
    let used = CPUTime.sample() - cpu
    let seconds = (ContinuousClock.now - started).seconds
    guard statistics.failed == 0 else {
        throw BenchmarkFailure(description: "\(statistics.failed) transfers failed: \(statistics.failures)")
    }
    let commands = Double(max(1, statistics.committed + statistics.noOps))
    let skipped = (executor.cache?.statistics.readsSkipped ?? 0) - skippedBefore
    return Measurement(
        rate: Double(statistics.committed + statistics.noOps) / seconds, statistics: statistics,
        readsSkipped: Double(skipped) / commands,
        clientMicroseconds: used.process / commands * 1e6, databaseMicroseconds: used.postgres.map { $0 / commands * 1e6 }
    )
}

/// pgbench's figures in the same run: transactions/s and CPU per transaction.
struct Baseline: Sendable {
    var tps: Double
    var clientMicroseconds: Double
    var databaseMicroseconds: Double?
}

/// CPU seconds used so far by this process, its finished children and the machine's `postgres` processes (nil if none can be read).
struct CPUTime {
    var process: Double
    /// The finished child processes' (pgbench's).
    var children: Double
    var postgres: Double?

    static func sample() -> CPUTime {
        CPUTime(process: seconds(RUSAGE_SELF), children: seconds(RUSAGE_CHILDREN), postgres: processesCPU(named: "postgres"))
    }

    private static func seconds(_ who: __rusage_who) -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(who.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    /// The CPU seconds (user and system) of every process whose command name is `name`, from `/proc`.
    static func processesCPU(named name: String) -> Double? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0, found = false
        for entry in entries where entry.first?.isNumber == true {
            guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")"),
                  stat[stat.index(after: open)..<close] == name
            else { continue }
            // After the name: state (field 3) ... utime (14), stime (15), and the reaped children's cutime (16) and
            // cstime (17): the server's backends end with their connections, and the postmaster reaps them.
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 14 else { continue }
            total += fields[11...14].compactMap { Double($0) }.reduce(0, +) / ticks
            found = true
        }
        return found ? total : nil
    }

    static func - (lhs: CPUTime, rhs: CPUTime) -> CPUTime {
        var postgres: Double?
        if let after = lhs.postgres, let before = rhs.postgres { postgres = after - before }
        return CPUTime(process: lhs.process - rhs.process, children: lhs.children - rhs.children, postgres: postgres)
    }
}

func bench(_ options: Options) async throws {
    let stores = options.list("stores", "memory,sqlite,postgres")
    let levels = options.list("concurrency", "1,4,16").compactMap(Int.init)
    let seconds = options.int("seconds", 3)
    let accounts = options.int("accounts", 5000)
    let cacheMiB = options.int("cache-mib", 64)
    let warmUp = options.int("warm-up", 2)
    print("two-stream transfer command, \(accounts) accounts, \(cacheMiB) MiB stream cache, \(warmUp) s warm-up and \(seconds) s per measurement, \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(loadAverage())")
    print("reads skipped: commands decided on cached streams without reading them (their appends check the versions)")
    print("CPU columns: microseconds of CPU per command (per pgbench transaction), of this process (of pgbench) and of the local PostgreSQL server")
    print("store       executors   commands/s   conflicts retried   reads skipped   CPU us client   CPU us db   pgbench tps   CPU us pgbench   CPU us db   ratio")
    func row(_ store: String, _ level: Int, _ measured: Measurement, _ baseline: Baseline? = nil) {
        func micros(_ value: Double?, _ width: Int) -> String { (value.map { String(format: "%.0f", $0) } ?? "-").leftPadded(width) }
        var line = store.padding(toLength: 12, withPad: " ", startingAt: 0) + String(level).leftPadded(9)
            + "   " + String(format: "%10.0f", measured.rate) + "   " + String(measured.statistics.conflictsRetried).leftPadded(17)
            + "   " + String(format: "%12.0f%%", measured.readsSkipped * 100)
            + "   " + micros(measured.clientMicroseconds, 13) + "   " + micros(measured.databaseMicroseconds, 9)
        if let baseline {
            line += "   " + String(format: "%11.0f", baseline.tps) + "   " + micros(baseline.clientMicroseconds, 14)
                + "   " + micros(baseline.databaseMicroseconds, 9) + "   " + String(format: "%5.2f", measured.rate / baseline.tps)
        }
        print(line)
    }
    for storeName in stores {
        for level in levels {
            switch storeName {
            case "memory":
                row(storeName, level, try await measure(store: InMemoryEventStore(), accounts: accounts, concurrency: level, seconds: seconds, warmUp: warmUp, cacheBytes: cacheMiB << 20))
            case "sqlite":
                let path = FileManager.default.temporaryDirectory.appendingPathComponent("eventcore-bench-\(UUID().uuidString).sqlite").path
                let store = try await SQLiteEventStore.open(SQLiteEventStore.Configuration(path: path))
                let measured = try await measure(store: store, accounts: accounts, concurrency: level, seconds: seconds, warmUp: warmUp, cacheBytes: cacheMiB << 20)
                try await store.close()
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
                row(storeName, level, measured)
            case "postgres":
                let loops = options.values["event-loops"].flatMap(Int.init).map { MultiThreadedEventLoopGroup(numberOfThreads: max(1, $0)) }
                let (measured, baseline) = try await Database.withClient(connections: max(level, 2), group: loops ?? PostgresURL.eventLoopGroup) { client in
                    let schema = "bench_\(UInt32.random(in: 0...UInt32.max))"
                    var configuration = PostgresEventStore.Configuration(schema: schema)
                    if let roundTrips = options.values["round-trips"].flatMap(Int.init) { configuration.concurrentRoundTrips = roundTrips }
                    let store = try await PostgresEventStore.start(client: client, configuration: configuration)
                    let measured = try await measure(store: store, accounts: accounts, concurrency: level, seconds: seconds, warmUp: warmUp, cacheBytes: cacheMiB << 20)
                    try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema) CASCADE"))
                    let cpu = CPUTime.sample()
                    let tps = try await PgBench.twoInsertTransactions(client: client, url: Database.url, concurrency: level, seconds: seconds, expectedRate: measured.rate)
                    let used = CPUTime.sample() - cpu
                    let transactions = Double(PgBench.transactionsPerClient(concurrency: level, seconds: seconds, expectedRate: measured.rate) * level)
                    return (measured, Baseline(
                        tps: tps, clientMicroseconds: used.children / transactions * 1e6,
                        databaseMicroseconds: used.postgres.map { $0 / transactions * 1e6 }
                    ))
                }
                row(storeName, level, measured, baseline)
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
