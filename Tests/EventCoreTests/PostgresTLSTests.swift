import EventCore
import EventStorePostgres
import Foundation
import Logging
import PostgresNIO
import Testing

/// The store over TLS to the test server (`scripts/postgres` gives it a certificate for localhost and
/// 127.0.0.1, signed by a CA of its own), with the `sslmode` values of PostgreSQL's own clients.
@Suite("PostgreSQL over TLS")
struct PostgresTLSTests {
    /// The test server's CA: `POSTGRES_TLS_CA`, or where `scripts/postgres start` made it.
    static let certificateAuthority = ProcessInfo.processInfo.environment["POSTGRES_TLS_CA"]
        ?? "\(ProcessInfo.processInfo.environment["FLEET_RUN_DIR"] ?? "/tmp/processfleet")/postgres/tls/ca.pem"

    static func url(host: String = "localhost", _ query: String) -> String {
        let parts = TestDatabase.parts
        return "postgres://\(parts.user):\(parts.password)@\(host):\(parts.port)/\(parts.database)?\(query)"
    }

    /// Runs `body` with a running pool made from `url`; fails if the body has not finished within 60 s.
    static func withClient<T: Sendable>(_ url: String, _ body: @Sendable @escaping (PostgresClient) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: try PostgresURL.clientConfiguration(url), backgroundLogger: Logger(label: "tests.tls"))
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                await client.run()
                return nil
            }
            group.addTask { try await body(client) }
            group.addTask {
                try await Task.sleep(for: .seconds(60))
                throw TLSTestFailure("no answer within 60 s")
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let result { return result }
            }
            throw TLSTestFailure("the client stopped")
        }
    }

    struct TLSTestFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Whether the session of `client` is encrypted, as the server sees it.
    static func sessionIsEncrypted(_ client: PostgresClient) async throws -> Bool {
        let rows = try await client.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        for try await ssl in rows.decode(Bool.self) { return ssl }
        return false
    }

    @Test("verify-full against the server's CA: encrypted, and the store works over it")
    func verifiedConnection() async throws {
        try #require(FileManager.default.fileExists(atPath: Self.certificateAuthority), "scripts/postgres start makes \(Self.certificateAuthority)")
        for host in ["localhost", "127.0.0.1"] {
            let url = Self.url(host: host, "sslmode=verify-full&sslrootcert=\(Self.certificateAuthority)")
            let appended = try await Self.withClient(url) { client in
                #expect(try await Self.sessionIsEncrypted(client))
                let schema = TestDatabase.uniqueSchema("tls")
                let store = try await PostgresEventStore.start(client: client, configuration: .init(schema: schema))
                let stream = try StreamID("tls-\(host)")
                _ = try await store.append(AppendRequest(events: [NewEvent(streamID: stream, eventType: "Checked", payload: Data("{}".utf8))]))
                let read = try await store.read(stream: stream)
                _ = try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA \"\(schema)\" CASCADE"))
                return read.events.count
            }
            #expect(appended == 1, "over \(host)")
        }
    }

    @Test("sslmode=require encrypts without verifying the server")
    func requireEncrypts() async throws {
        let encrypted = try await Self.withClient(Self.url("sslmode=require")) { try await Self.sessionIsEncrypted($0) }
        #expect(encrypted)
    }

    @Test("sslmode=disable is plain text")
    func disableIsPlain() async throws {
        let encrypted = try await Self.withClient(Self.url("sslmode=disable")) { try await Self.sessionIsEncrypted($0) }
        #expect(!encrypted)
    }

    @Test("a server whose certificate does not verify is refused at once, and the error keeps the password out")
    func unverifiableServerIsRefused() async throws {
        // The system's trust store does not know the test CA.
        for query in ["sslmode=verify-full", "sslmode=verify-ca"] {
            do {
                try await PostgresURL.checkConnection(Self.url(query))
                Issue.record("\(query) connected to a server it cannot verify")
            } catch {
                #expect(error.code == .storeUnavailable)
                #expect(error.description.contains("TLS handshake failed"), "\(error.description)")
                #expect(!error.description.contains("password=") && !error.description.contains(":\(TestDatabase.parts.password)@"), "\(error.description)")
            }
        }
        // With the right CA the same check passes.
        try await PostgresURL.checkConnection(Self.url("sslmode=verify-full&sslrootcert=\(Self.certificateAuthority)"))
    }

    @Test("a wrong password and a closed port are reported at once with the cause")
    func unreachableOrRefused() async throws {
        let parts = TestDatabase.parts
        do {
            try await PostgresURL.checkConnection("postgres://\(parts.user):not-the-Pa55word@\(parts.host):\(parts.port)/\(parts.database)")
            Issue.record("a wrong password connected")
        } catch {
            #expect(error.code == .storeUnavailable)
            #expect(error.description.contains("the server refused"), "\(error.description)")
            #expect(!error.description.contains("not-the-Pa55word"), "\(error.description)")
        }
        do {
            try await PostgresURL.checkConnection("postgres://\(parts.user):\(parts.password)@127.0.0.1:1/\(parts.database)")
            Issue.record("a closed port connected")
        } catch {
            #expect(error.code == .storeUnavailable)
            #expect(error.description.contains("127.0.0.1:1"), "\(error.description)")
        }
    }

    @Test("a bad sslmode or option is refused with a clear error that keeps the password out")
    func badOptions() {
        for (query, expected) in [("sslmode=prefer-maybe", "sslmode must be"), ("sslmode=require&sslcompression=1", "unknown option sslcompression")] {
            let url = "postgres://fleet:s3cret-Pa55word@localhost:5432/fleet?\(query)"
            do {
                _ = try PostgresURL.clientConfiguration(url)
                Issue.record("\(query) was accepted")
            } catch {
                #expect(error.code == .invalidConfiguration)
                #expect(error.description.contains(expected), "\(error.description)")
                #expect(!error.description.contains("s3cret"), "\(error.description)")
            }
        }
    }
}
