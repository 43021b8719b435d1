import AMQP
import ArgumentParser
import Fleet
import Foundation

/// `fleet worker` processes started from this executable on this machine, for `fleet demo` and `fleet bench`.
final class LocalFleet {
    /// The workers, in start order.
    let processes: [Process]
    /// Their HTTP ports (0 when off).
    let httpPorts: [Int]
    private let directory: String

    /// Starts `count` workers; each one logs to `directory/<name>-<n>.log`.
    init(count: Int, storeURL: String, topologyPath: String, amqpURL: String, directory: String, name: String,
         orderStepTimeout: Int, orderDeadline: Int, firstHTTPPort: Int? = nil, concurrency: Int? = nil, idleReleaseSeconds: Int? = nil) throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var processes: [Process] = []
        var ports: [Int] = []
        for index in 0..<count {
            let port = firstHTTPPort.map { $0 + index } ?? 0
            let process = Process()
            process.executableURL = executable
            process.arguments = [
                "worker", "--store", storeURL, "--topology", topologyPath, "--amqp-url", amqpURL,
                "--http-port", String(port), "--worker-id", "\(name)-\(index + 1)",
                "--order-step-timeout", String(orderStepTimeout), "--order-retries", "2", "--order-retry-delay", "1",
                "--order-deadline", String(orderDeadline),
            ]
            var environment = ProcessInfo.processInfo.environment
            environment["FLEET_LOG_LEVEL"] = environment["FLEET_LOG_LEVEL"] ?? "warning"
            if let concurrency { environment["FLEET_CONCURRENCY"] = String(concurrency) }
            if let idleReleaseSeconds { environment["FLEET_IDLE_RELEASE_SECONDS"] = String(idleReleaseSeconds) }
            process.environment = environment
            let log = "\(directory)/\(name)-\(index + 1).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            processes.append(process)
            ports.append(port)
        }
        self.processes = processes
        self.httpPorts = ports
        self.directory = directory
    }

    deinit {
        for process in processes where process.isRunning { process.terminate() }
    }

    /// Waits until every worker consumes every routed queue.
    func waitUntilReady(admin: AMQPConnection, topology: Topology, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            var ready = true
            for route in topology.fleet.routes {
                let state = try await admin.declare(QueueDeclaration(name: route.queue), passive: true)
                if state.consumerCount < UInt32(processes.count) { ready = false }
            }
            if ready { return }
            if ContinuousClock.now > deadline || processes.contains(where: { !$0.isRunning }) {
                throw ValidationError("the workers did not start; see \(directory)/*.log")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Stops every worker with SIGTERM and waits for it to drain and exit (SIGKILL after `grace`).
    func stop(grace: Duration = .seconds(60)) async {
        for process in processes where process.isRunning { process.terminate() }
        let deadline = ContinuousClock.now + grace
        for process in processes {
            while process.isRunning {
                if ContinuousClock.now > deadline { kill(process.processIdentifier, SIGKILL) }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// Each running worker's resident memory, in bytes (`VmRSS` of `/proc/<pid>/status`).
    func residentMemory() -> [Int] {
        processes.compactMap { process in
            guard process.isRunning,
                  let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
            else { return nil }
            return kilobytes * 1024
        }
    }
}
