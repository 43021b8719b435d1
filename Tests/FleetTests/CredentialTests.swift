import FleetTestSupport
import Foundation
import Testing

/// Secrets reach a worker through the environment or `*_FILE` files and never come back out: not in its log,
/// not in the error it stops with.
@Suite("Credentials")
struct CredentialTests {
    static let password = "Pa55-\(UUID().uuidString.prefix(12))"

    /// Runs `fleet worker` with `environment` and returns what it printed; it must stop with an error.
    static func failingWorker(_ environment: [String: String]) async throws -> String {
        var base = ProcessInfo.processInfo.environment
        base["FLEET_TOPOLOGY"] = TestBroker.repositoryRoot.appendingPathComponent("topology.json").path
        base["FLEET_HTTP_PORT"] = "0"
        base["FLEET_LOG_LEVEL"] = "trace"
        for key in ["FLEET_AMQP_URL", "FLEET_STORE_URL", "FLEET_ADMIN_TOKEN"] { base[key] = nil }
        base.merge(environment) { $1 }
        let outcome = try await ChildProcess.run(FleetEndToEndTests.Fleet.executable, ["worker"], environment: base, timeout: .seconds(90))
        #expect(outcome.exited && outcome.status != 0 && !outcome.timedOut, "the worker should stop with an error: \(outcome.status) \(outcome.output)")
        return outcome.output
    }

    static func temporaryFile(_ contents: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-secret-\(UUID().uuidString)")
        try contents.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    @Test("a broker password is in neither the log nor the error, even at trace level")
    func brokerPassword() async throws {
        let sqlite = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-cred-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: sqlite + suffix) } }
        // Wrong credentials on the real broker: refused by the broker.
        let refused = try await Self.failingWorker([
            "FLEET_AMQP_URL": "amqp://guest:\(Self.password)@127.0.0.1:5672/", "FLEET_STORE_URL": sqlite,
        ])
        #expect(!refused.contains(Self.password), "the password was printed: \(refused)")
        #expect(refused.lowercased().contains("access") || refused.lowercased().contains("auth") || refused.lowercased().contains("refused"), "\(refused)")
    }

    @Test("a store password is in neither the log nor the error; the URL may come from a file")
    func storePassword() async throws {
        let parts = ProcessInfo.processInfo.environment["POSTGRES_URL"].flatMap(URLComponents.init(string:))
        let host = parts?.host ?? "127.0.0.1", port = parts?.port ?? 5432
        // The right server, a wrong password: the server refuses, and the worker says so without the password.
        let wrong = "postgres://fleet:\(Self.password)@\(host):\(port)/fleet?schema=cred"
        let refused = try await Self.failingWorker(["FLEET_STORE_URL": wrong])
        #expect(!refused.contains(Self.password), "the password was printed: \(refused)")
        #expect(refused.contains("the server refused"), "\(refused)")

        // The same URL from a file: read from there (the error names the host of the file's URL).
        let file = try Self.temporaryFile("postgres://fleet:\(Self.password)@127.0.0.1:1/fleet\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try await Self.failingWorker(["FLEET_STORE_URL_FILE": file.path])
        #expect(!fromFile.contains(Self.password), "the password was printed: \(fromFile)")
        #expect(fromFile.contains("127.0.0.1:1"), "\(fromFile)")
    }
}
