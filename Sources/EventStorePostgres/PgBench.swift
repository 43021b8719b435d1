import Foundation
import PostgresNIO

/// PostgreSQL's own `pgbench`, run as the baseline of the project's benchmarks: transactions of two inserts into
/// a table shaped like the events table, at a given concurrency, measured in the same run as the project's
/// figure so both see the same machine.
public enum PgBench {
    /// Why a baseline run failed.
    public struct Failure: Error, CustomStringConvertible {
        /// What went wrong.
        public var description: String
    }

    /// `pgbench`: `PGBENCH`, else the newest `/usr/lib/postgresql/*/bin/pgbench`.
    public static var path: String? {
        if let path = ProcessInfo.processInfo.environment["PGBENCH"] { return path }
        let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
            .map { "/usr/lib/postgresql/\($0)/bin/pgbench" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// How many transactions each of `concurrency` clients runs in ``twoInsertTransactions(client:url:concurrency:seconds:expectedRate:)``.
    public static func transactionsPerClient(concurrency: Int, seconds: Int, expectedRate: Double) -> Int {
        max(100, Int(expectedRate * Double(seconds) / Double(max(1, concurrency))))
    }

    /// Transactions per second of two inserts at `concurrency` clients against the database of `url`, in a
    /// schema of its own that is dropped afterwards.
    ///
    /// pgbench runs a fixed number of transactions (`-t`), `expectedRate` × `seconds` in all, so that it lasts
    /// about as long as the measurement it is compared with: a child of a Swift process inherits a signal mask
    /// that blocks the alarm `-T` relies on.
    public static func twoInsertTransactions(
        client: PostgresClient, url: String, concurrency: Int, seconds: Int, expectedRate: Double
    ) async throws -> Double {
        guard let pgbench = path else { throw Failure(description: "pgbench not found (install postgresql or set PGBENCH)") }
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

        let transactions = transactionsPerClient(concurrency: concurrency, seconds: seconds, expectedRate: expectedRate)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: pgbench)
        process.arguments = ["-n", "-M", "prepared", "-c", "\(concurrency)", "-j", "\(min(concurrency, 2))", "-t", "\(transactions)", "-f", script.path, url]
        let output = Pipe()
        process.standardOutput = output
        // Its errors too, so that a failed run says why.
        process.standardError = output
        let (exited, continuation) = AsyncStream.makeStream(of: Int32.self)
        process.terminationHandler = { finished in
            continuation.yield(finished.terminationStatus)
            continuation.finish()
        }
        try process.run()
        // pgbench prints a few lines only (and a line per aborted client), well within the pipe's buffer, so it
        // never waits for this reader.
        let status = await exited.first { _ in true } ?? -1
        let data = output.fileHandleForReading.readDataToEndOfFile()
        try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \(schema) CASCADE"))
        let text = String(decoding: data, as: UTF8.self)
        guard status == 0,
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("tps = ") }),
              let tps = Double(line.dropFirst(6).prefix { $0 != " " })
        else {
            throw Failure(description: "pgbench failed (status \(status)): \(text.suffix(2000))")
        }
        return tps
    }
}
