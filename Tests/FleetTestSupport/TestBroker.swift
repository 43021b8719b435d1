import AMQP
import Foundation

/// The brokers the test script starts: the shared one, and a second node that tests may stop and restart.
public enum TestBroker {
    public static var url: String {
        ProcessInfo.processInfo.environment["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
    }

    public static var configuration: AMQPConfiguration {
        get throws(AMQPError) { try AMQPConfiguration(url: url) }
    }

    /// The node reserved for disruptive tests (restarts, alarms), so they cannot disturb the others.
    public static var disruptivePort: Int {
        Int(ProcessInfo.processInfo.environment["AMQP_DISRUPTIVE_PORT"] ?? "") ?? 5673
    }

    public static var runDirectory: String {
        ProcessInfo.processInfo.environment["FLEET_RUN_DIR"] ?? "/tmp/processfleet"
    }

    public static var disruptiveRunDirectory: String {
        ProcessInfo.processInfo.environment["AMQP_DISRUPTIVE_RUN_DIR"] ?? "/tmp/processfleet-disruptive"
    }

    public static var tlsPort: Int {
        Int(ProcessInfo.processInfo.environment["RABBITMQ_TLS_PORT"] ?? "") ?? 5671
    }

    public static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    public static func connect(_ change: (inout AMQPConfiguration) -> Void = { _ in }) async throws(AMQPError) -> AMQPConnection {
        var configuration = try configuration
        change(&configuration)
        return try await AMQPConnection.connect(configuration)
    }

    /// A name no other test uses.
    public static func uniqueName(_ prefix: String) -> String {
        "test.\(prefix).\(UUID().uuidString.prefix(8).lowercased())"
    }

    /// Runs `rabbitmqctl` against the disruptive node through the project's script.
    @discardableResult
    public static func disruptiveControl(_ arguments: String...) async throws -> String {
        try await control(arguments, disruptive: true)
    }

    /// Runs `rabbitmqctl` against the shared node through the project's script.
    @discardableResult
    public static func sharedControl(_ arguments: String...) async throws -> String {
        try await control(arguments, disruptive: false)
    }

    /// Runs `rabbitmqctl` against the shared node through the project's script.
    @discardableResult
    public static func sharedControl(_ arguments: [String]) async throws -> String {
        try await control(arguments, disruptive: false)
    }

    private static func control(_ arguments: [String], disruptive: Bool) async throws -> String {
        var environment = ProcessInfo.processInfo.environment
        if disruptive {
            environment["FLEET_RUN_DIR"] = disruptiveRunDirectory
            environment["RABBITMQ_NODE"] = "disruptive@localhost"
            environment["RABBITMQ_PORT"] = String(disruptivePort)
        }
        let outcome = try await ChildProcess.run(
            repositoryRoot.appendingPathComponent("scripts/rabbitmq"), ["ctl"] + arguments, environment: environment, timeout: .seconds(180)
        )
        guard outcome.exited, outcome.status == 0, !outcome.timedOut else {
            throw TestFailure("rabbitmqctl \(arguments.joined(separator: " ")) failed\(outcome.timedOut ? " (killed after 180 s)" : ""): \(outcome.output)")
        }
        return outcome.standardOutput
    }

    /// Waits until `condition` holds, checking every 50 ms, for at most `seconds`.
    public static func eventually(_ seconds: Double = 30, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
