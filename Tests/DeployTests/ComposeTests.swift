import Fleet
import Foundation
import Testing

/// docker-compose.yml agrees with the worker, the broker configuration and Prometheus.
@Suite struct ComposeTests {
    static func compose() throws -> YAMLValue {
        try RepositoryFiles.yaml("docker-compose.yml")
    }

    /// The services that run `fleet worker`.
    static func workers(_ compose: YAMLValue) -> [(name: String, service: YAMLValue)] {
        (compose["services"]?.mapping ?? [:]).filter { $0.value["command"]?.array?.first?.string == "worker" }
            .map { ($0.key, $0.value) }.sorted { $0.name < $1.name }
    }

    static func environment(_ service: YAMLValue) -> [String: String] {
        if let mapping = service["environment"]?.mapping { return mapping.compactMapValues(\.scalarText) }
        var result: [String: String] = [:]
        for entry in service["environment"]?.array?.compactMap(\.string) ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1)
            result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return result
    }

    /// Compose durations such as `35s`, `1m30s`.
    static func seconds(_ duration: String) -> Int? {
        var total = 0
        var number = ""
        for character in duration {
            if character.isNumber { number.append(character); continue }
            guard let value = Int(number) else { return nil }
            switch character {
            case "h": total += value * 3600
            case "m": total += value * 60
            case "s": total += value
            default: return nil
            }
            number = ""
        }
        return number.isEmpty ? total : nil
    }

    static func workerProblems(_ compose: YAMLValue, configuration: WorkerConfiguration = WorkerConfiguration()) -> [String] {
        var problems: [String] = []
        let workers = workers(compose)
        let replicas = workers.reduce(0) { $0 + ($1.service["deploy"]?["replicas"]?.int ?? 1) }
        if replicas < 3 { problems.append("compose: \(replicas) worker(s), expected 3") }
        let services = compose["services"]?.mapping ?? [:]
        for (name, worker) in workers {
            let env = environment(worker)
            if !(env["FLEET_STORE_URL"] ?? "").hasPrefix("postgres://") {
                problems.append("compose: \(name) does not use the PostgreSQL store")
            }
            if !(env["FLEET_AMQP_URL"] ?? "").contains("@rabbitmq:") {
                problems.append("compose: \(name) does not connect to the rabbitmq service")
            }
            if let port = env["FLEET_HTTP_PORT"], Int(port) != configuration.httpPort {
                problems.append("compose: \(name) serves HTTP on \(port), Prometheus scrapes \(configuration.httpPort)")
            }
            let grace = env["FLEET_SHUTDOWN_GRACE_SECONDS"].flatMap { Int($0) } ?? configuration.shutdownGraceSeconds
            let stop = worker["stop_grace_period"]?.string.flatMap(seconds) ?? 10
            if stop <= grace {
                problems.append("compose: \(name) stop_grace_period \(stop)s is not longer than FLEET_SHUTDOWN_GRACE_SECONDS \(grace)")
            }
            for dependency in ["rabbitmq", "postgres"] {
                if worker["depends_on"]?[dependency]?["condition"]?.string != "service_healthy" {
                    problems.append("compose: \(name) does not wait for \(dependency) to be healthy")
                }
                if services[dependency]?["healthcheck"]?["test"] == nil {
                    problems.append("compose: \(dependency) has no healthcheck")
                }
            }
        }
        return problems
    }

    /// The paths inside the rabbitmq container that host files are mounted on.
    static func mounts(_ service: YAMLValue) -> [String: String] {
        var result: [String: String] = [:]
        for volume in service["volumes"]?.array?.compactMap(\.string) ?? [] {
            let parts = volume.split(separator: ":").map(String.init)
            if parts.count >= 2 { result[parts[1]] = parts[0] }
        }
        return result
    }

    static func brokerProblems(_ compose: YAMLValue, rabbitmqConf: String, enabledPlugins: String) -> [String] {
        var problems: [String] = []
        guard let rabbitmq = compose["services"]?["rabbitmq"] else { return ["compose: no rabbitmq service"] }
        let mounted = mounts(rabbitmq)
        if mounted["/etc/rabbitmq/rabbitmq.conf"] != "./deploy/compose/rabbitmq.conf" {
            problems.append("compose: deploy/compose/rabbitmq.conf is not mounted as /etc/rabbitmq/rabbitmq.conf")
        }
        if mounted["/etc/rabbitmq/enabled_plugins"] != "./deploy/compose/enabled_plugins" {
            problems.append("compose: deploy/compose/enabled_plugins is not mounted as /etc/rabbitmq/enabled_plugins")
        }
        let definitions = rabbitmqConf.components(separatedBy: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .first { $0.hasPrefix("load_definitions") }?
            .split(separator: "=", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces)
        guard let definitions else { return problems + ["rabbitmq.conf: no load_definitions"] }
        let topologyTargets = mounted.filter { $0.value == "./topology.json" }.map(\.key)
        let loaded = topologyTargets.contains { target in
            target == definitions || (target.hasPrefix(definitions.hasSuffix("/") ? definitions : definitions + "/") && target.hasSuffix(".json"))
        }
        if !loaded { problems.append("compose: topology.json is not mounted where load_definitions (\(definitions)) reads") }
        for plugin in ["rabbitmq_consistent_hash_exchange", "rabbitmq_management", "rabbitmq_prometheus"] where !enabledPlugins.contains(plugin) {
            problems.append("enabled_plugins: \(plugin) is not enabled")
        }
        return problems
    }

    @Test func workersAgreeWithTheConfiguration() throws {
        #expect(Self.workerProblems(try Self.compose()) == [])
    }

    @Test func workerChecksCatchBrokenVariants() throws {
        let text = try RepositoryFiles.text("docker-compose.yml")
        let variants: [(String, String, String)] = [
            ("stop_grace_period: 35s", "stop_grace_period: 20s", "stop_grace_period"),
            ("FLEET_STORE_URL: postgres://", "FLEET_STORE_URL: sqlite:///var/lib/fleet/", "PostgreSQL"),
            ("FLEET_HTTP_PORT: \"9090\"", "FLEET_HTTP_PORT: \"8080\"", "serves HTTP"),
            ("condition: service_healthy\n    postgres:", "condition: service_started\n    postgres:", "rabbitmq to be healthy"),
        ]
        for (original, replacement, expected) in variants {
            #expect(text.contains(original), "the variant's original text \(original) is gone from docker-compose.yml")
            let problems = Self.workerProblems(try YAMLValue.parse(text.replacingOccurrences(of: original, with: replacement)))
            #expect(problems.contains { $0.contains(expected) }, "\(replacement): \(problems)")
        }
        let twoWorkers = text.replacingOccurrences(of: "command: [\"worker\"]", with: "command: [\"simulator\"]")
        #expect(!Self.workerProblems(try YAMLValue.parse(twoWorkers)).isEmpty)
    }

    @Test func rabbitmqLoadsTheTopologyAndThePlugins() throws {
        let compose = try Self.compose()
        let conf = try RepositoryFiles.text("deploy/compose/rabbitmq.conf")
        let plugins = try RepositoryFiles.text("deploy/compose/enabled_plugins")
        #expect(Self.brokerProblems(compose, rabbitmqConf: conf, enabledPlugins: plugins) == [])

        #expect(!Self.brokerProblems(compose, rabbitmqConf: conf.replacingOccurrences(of: "load_definitions = /etc/rabbitmq/definitions.d", with: "load_definitions = /etc/rabbitmq/other"), enabledPlugins: plugins).isEmpty)
        #expect(!Self.brokerProblems(compose, rabbitmqConf: conf, enabledPlugins: "[rabbitmq_management,rabbitmq_prometheus].").isEmpty)
        let text = try RepositoryFiles.text("docker-compose.yml")
        let unmounted = try YAMLValue.parse(text.replacingOccurrences(of: "- ./topology.json:", with: "- ./other.json:"))
        #expect(!Self.brokerProblems(unmounted, rabbitmqConf: conf, enabledPlugins: plugins).isEmpty)
    }

    @Test func theSimulatorRunsFromTheSameImage() throws {
        let compose = try Self.compose()
        let simulator = try #require(compose["services"]?["simulator"])
        #expect(simulator["command"]?.array?.first?.string == "simulator")
        let worker = try #require(Self.workers(compose).first?.service)
        #expect(simulator["image"]?.string == worker["image"]?.string)
    }

    @Test func secretsComeFromTheEnvironment() throws {
        // Every password in docker-compose.yml is an interpolated variable, none is written down.
        let text = try RepositoryFiles.text("docker-compose.yml")
        let compose = try Self.compose()
        for (name, service) in compose["services"]?.mapping ?? [:] {
            for (key, value) in Self.environment(service) where key.contains("PASSWORD") || key.hasSuffix("_URL") {
                if key.contains("PASSWORD") {
                    #expect(value.hasPrefix("${"), "\(name): \(key) is written down")
                }
                if let credentials = value.range(of: "://")?.upperBound, let at = value.range(of: "@") {
                    let userInfo = value[credentials..<at.lowerBound]
                    #expect(userInfo.contains("${"), "\(name): \(key) carries a password literally")
                }
            }
        }
        #expect(!text.contains("guest:guest"))
    }
}
