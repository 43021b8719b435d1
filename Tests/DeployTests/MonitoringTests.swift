import Fleet
import Foundation
import Testing

/// Prometheus' configuration and rules, and the Grafana dashboard, name only metrics the fleet exports and
/// scrape the port the workers serve.
@Suite struct MonitoringTests {
    static func ruleExpressions() throws -> [(alert: String, expression: String)] {
        let rules = try RepositoryFiles.yaml("deploy/prometheus/rules.yml")
        return (rules["groups"]?.array ?? []).flatMap { group in
            (group["rules"]?.array ?? []).compactMap { rule in
                rule["expr"]?.scalarText.map { (rule["alert"]?.string ?? rule["record"]?.string ?? "?", $0) }
            }
        }
    }

    /// The PromQL of every panel target and of every query variable of a dashboard.
    static func dashboardQueries(_ dashboard: Any) -> [(source: String, query: String)] {
        var queries: [(String, String)] = []
        func visit(panels: [[String: Any]]) {
            for panel in panels {
                let title = panel["title"] as? String ?? "?"
                for target in panel["targets"] as? [[String: Any]] ?? [] {
                    if let expression = target["expr"] as? String { queries.append((title, expression)) }
                }
                visit(panels: panel["panels"] as? [[String: Any]] ?? [])
            }
        }
        let root = dashboard as? [String: Any] ?? [:]
        visit(panels: root["panels"] as? [[String: Any]] ?? [])
        for variable in (root["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? [] where variable["type"] as? String == "query" {
            let query = (variable["query"] as? [String: Any])?["query"] as? String ?? variable["query"] as? String ?? ""
            // label_values(metric, label): the metric is a series name, the label is not.
            if let open = query.firstIndex(of: "("), let comma = query.lastIndex(of: ","), query.hasPrefix("label_values") {
                queries.append(("variable \(variable["name"] ?? "?")", String(query[query.index(after: open)..<comma])))
            } else {
                queries.append(("variable \(variable["name"] ?? "?")", query))
            }
        }
        return queries
    }

    /// The names the checks accept are the ones the sources register (a renamed metric fails here).
    @Test func exportedMetricsAreTheSourcesNames() throws {
        let sources = try ["Sources/Fleet/Worker/WorkerMetrics.swift", "Sources/Processes/ProcessMetrics.swift"]
            .map(RepositoryFiles.text).joined()
        for name in DeployChecks.exportedMetrics.sorted() {
            #expect(sources.contains("\"\(name)\""), "\(name) is not a metric label in the sources")
        }
        #expect(!sources.contains("\"fleet_messages_nacked_total\""))
    }

    @Test func promQLMetricNamesAreFound() {
        #expect(DeployChecks.metricNames(inQuery: "sum by (queue, reason) (increase(fleet_messages_dead_lettered_total{queue=~\"a|b\"}[10m])) > 0")
                == ["fleet_messages_dead_lettered_total"])
        #expect(DeployChecks.metricNames(inQuery: "histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le)) > 1e3 unless up == 0")
                == ["x_bucket", "up"])
        #expect(DeployChecks.metricNames(inQuery: "rate(fleet_messages_acked_total[$__rate_interval]) / on (queue) group_left rate(y[1m])")
                == ["fleet_messages_acked_total", "y"])
        #expect(DeployChecks.unknownMetrics(inQuery: "rate(fleet_messages_nacked_total[5m])", source: "r")
                == ["r: fleet_messages_nacked_total is not a metric the fleet exports"])
        #expect(DeployChecks.unknownMetrics(inQuery: "rate(fleet_handler_duration_seconds_bucket[5m])", source: "r") == [])
    }

    @Test func rulesNameExportedMetrics() throws {
        let expressions = try Self.ruleExpressions()
        #expect(expressions.count >= 4)
        for (alert, expression) in expressions {
            #expect(DeployChecks.unknownMetrics(inQuery: expression, source: alert) == [])
        }
        let alerts = Set(expressions.map(\.alert))
        #expect(alerts.isSuperset(of: ["FleetWorkerDown", "FleetDeadLettersRising", "FleetConsumingWithoutAcking", "FleetProcessFailureRatioHigh"]))
        let used = expressions.reduce(into: Set<String>()) { $0.formUnion(DeployChecks.metricNames(inQuery: $1.expression)) }
        #expect(used.isSuperset(of: ["fleet_messages_dead_lettered_total", "fleet_messages_consumed_total", "fleet_messages_acked_total",
                                     "eventcore_processes_failed_total", "up"]))
    }

    @Test func theDashboardShowsEveryExportedMetric() throws {
        let queries = Self.dashboardQueries(try RepositoryFiles.json("deploy/grafana/fleet-dashboard.json"))
        #expect(queries.count >= 12)
        var used: Set<String> = []
        for (source, query) in queries {
            #expect(DeployChecks.unknownMetrics(inQuery: query, source: source) == [])
            used.formUnion(DeployChecks.metricNames(inQuery: query))
        }
        let shown = Set(used.map { name in
            DeployChecks.histograms.first { name.hasPrefix($0) } ?? name
        })
        #expect(DeployChecks.exportedMetrics.subtracting(shown).sorted() == [])
        // Dead letters are broken down by reason, durations by quantile.
        #expect(queries.contains { $0.query.contains("fleet_messages_dead_lettered_total") && $0.query.contains("reason") })
        #expect(queries.contains { $0.query.contains("histogram_quantile") && $0.query.contains("eventcore_process_duration_seconds_bucket") })
        #expect(queries.contains { $0.query.contains("histogram_quantile") && $0.query.contains("fleet_handler_duration_seconds_bucket") })

        // A panel with a misspelt metric is caught.
        let misspelt: [String: Any] = ["panels": [["title": "p", "targets": [["expr": "sum(fleet_messages_consumed)"]]]]]
        #expect(Self.dashboardQueries(misspelt).flatMap { DeployChecks.unknownMetrics(inQuery: $0.query, source: $0.source) }.count == 1)
    }

    @Test func prometheusScrapesTheWorkersPort() throws {
        let configuration = try RepositoryFiles.yaml("deploy/prometheus/prometheus.yml")
        let port = WorkerConfiguration().httpPort
        let compose = try RepositoryFiles.yaml("docker-compose.yml")
        let workerServices = Set(ComposeTests.workers(compose).map(\.name))
        #expect(Self.scrapeProblems(configuration, workers: workerServices, port: port) == [])
        #expect(!Self.scrapeProblems(configuration, workers: workerServices, port: port + 1).isEmpty)
        #expect(!Self.scrapeProblems(configuration, workers: workerServices.union(["worker-4"]), port: port).isEmpty)

        // The rules file Prometheus loads is the one compose mounts.
        let ruleFiles = configuration["rule_files"]?.array?.compactMap(\.string) ?? []
        let mounted = ComposeTests.mounts(try #require(compose["services"]?["prometheus"]))
        #expect(!ruleFiles.isEmpty)
        for file in ruleFiles { #expect(mounted[file] == "./deploy/prometheus/rules.yml") }
        #expect(mounted["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml")
    }

    static func scrapeProblems(_ configuration: YAMLValue, workers: Set<String>, port: Int) -> [String] {
        guard let job = configuration["scrape_configs"]?.array?.first(where: { $0["job_name"]?.string == "fleet-worker" }) else {
            return ["prometheus.yml: no fleet-worker job"]
        }
        var problems: [String] = []
        if let path = job["metrics_path"]?.string, path != "/metrics" { problems.append("prometheus.yml: metrics_path \(path)") }
        let targets = (job["static_configs"]?.array ?? []).flatMap { $0["targets"]?.array?.compactMap(\.string) ?? [] }
        var hosts: Set<String> = []
        for target in targets {
            let parts = target.split(separator: ":")
            guard parts.count == 2, Int(parts[1]) == port else {
                problems.append("prometheus.yml: target \(target) is not on port \(port)")
                continue
            }
            hosts.insert(String(parts[0]))
        }
        if hosts != workers { problems.append("prometheus.yml: scrapes \(hosts.sorted()), compose runs \(workers.sorted())") }
        return problems
    }
}
