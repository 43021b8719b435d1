import FleetTestSupport
import Foundation
import Testing

/// `fleet bench` end to end, small: it runs the workload through real workers and reports figures that hang
/// together.
@Suite("fleet bench")
struct BenchCommandTests {
    struct Result: Decodable {
        var store: String
        var workers: Int
        var processes: Int
        var processesEndedAsExpected: Bool
        var processEvents: Int
        var processEventsPerSecond: Double
        var latencySamples: Int
        var latencyMilliseconds: [String: Double]
        var residentMemoryStartMiB: [Double]
        var residentMemoryEndMiB: [Double]
        var brokerCeilingPerSecond: Double
        var storeCeilingPerSecond: Double
        var ratio: Double
    }

    @Test(.timeLimit(.minutes(5)))
    func aSmallBenchReportsConsistentFigures() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let output = directory.appendingPathComponent("bench.json")
        try await FleetEndToEndTests.Fleet.with(storeURL: directory.appendingPathComponent("unused.sqlite").path) { fleet in
            let outcome = try await ChildProcess.run(FleetEndToEndTests.Fleet.executable, [
                "bench", "--stores", "sqlite", "--workers", "1", "--orders", "30", "--trips", "6", "--ceiling-messages", "500", "--step-timeout", "5",
                "--amqp-url", fleet.amqpURL, "--directory", directory.path, "--json", output.path,
                "--topology", TestBroker.repositoryRoot.appendingPathComponent("topology.json").path,
            ], timeout: .seconds(240))
            #expect(outcome.exited && outcome.status == 0, "\(outcome.output)")
            #expect(outcome.standardOutput.contains("broker path alone"), "\(outcome.standardOutput)")
        }
        let results = try JSONDecoder().decode([Result].self, from: Data(contentsOf: output))
        let result = try #require(results.first)
        #expect(results.count == 1 && result.store == "sqlite" && result.workers == 1)
        #expect(result.processes == 36 && result.processesEndedAsExpected)
        #expect(result.processEvents >= result.processes, "every process publishes at least one event")
        #expect(result.latencySamples > 0)
        let p50 = result.latencyMilliseconds["p50"] ?? -1, p99 = result.latencyMilliseconds["p99"] ?? -1, max = result.latencyMilliseconds["max"] ?? -1
        #expect(0 < p50 && p50 <= p99 && p99 <= max, "\(result.latencyMilliseconds)")
        #expect(result.residentMemoryStartMiB.count == 1 && result.residentMemoryEndMiB.count == 1)
        #expect(result.residentMemoryStartMiB.allSatisfy { $0 > 1 })
        #expect(result.brokerCeilingPerSecond > 0 && result.storeCeilingPerSecond > 0)
        let expected = result.processEventsPerSecond / min(result.brokerCeilingPerSecond, result.storeCeilingPerSecond)
        #expect(abs(result.ratio - expected) < 1e-9 * Swift.max(1, expected))
    }

    struct TimeoutReport: Decodable {
        var scheduled: Int
        var received: Int
        var early: Int
        var latenessMilliseconds: [String: Double]
    }

    /// `fleet bench --timeouts`: every timeout scheduled through the delay levels arrives, none early.
    @Test(.timeLimit(.minutes(3)))
    func timeoutsThroughTheDelayLevelsArriveAndNoneEarly() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let output = directory.appendingPathComponent("timeouts.json")
        try await FleetEndToEndTests.Fleet.with(storeURL: directory.appendingPathComponent("unused.sqlite").path) { fleet in
            let outcome = try await ChildProcess.run(FleetEndToEndTests.Fleet.executable, [
                "bench", "--timeouts", "300", "--timeout-spread", "4", "--amqp-url", fleet.amqpURL, "--json", output.path,
                "--topology", TestBroker.repositoryRoot.appendingPathComponent("topology.json").path,
            ], timeout: .seconds(150))
            #expect(outcome.exited && outcome.status == 0, "\(outcome.output)")
        }
        let report = try JSONDecoder().decode(TimeoutReport.self, from: Data(contentsOf: output))
        #expect(report.scheduled == 300 && report.received == 300 && report.early == 0)
        let p50 = report.latenessMilliseconds["p50"] ?? -1, max = report.latenessMilliseconds["max"] ?? -1
        #expect(0 <= p50 && p50 <= max, "\(report.latenessMilliseconds)")
    }
}
