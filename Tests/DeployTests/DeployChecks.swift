import Fleet
import Foundation

/// The checks of the deployment artifacts against the worker. Each returns the problems it found (empty when
/// the artifact agrees), so that a test can show both that the committed files pass and that a broken variant
/// of them is caught.
enum DeployChecks {
    // MARK: environment

    /// The names a worker reads: `WorkerConfiguration.keys` and the `_FILE` form of each.
    static let knownVariables: Set<String> = Set(WorkerConfiguration.keys.flatMap { [$0.name, $0.name + "_FILE"] })

    /// The `FLEET_*` names in a text, not counting ones that are the tail of a longer word.
    static func fleetVariables(in text: String) -> Set<String> {
        let pattern = try! NSRegularExpression(pattern: "(?<![A-Za-z0-9_])FLEET_[A-Z0-9_]*[A-Z0-9]")
        let range = NSRange(text.startIndex..., in: text)
        return Set(pattern.matches(in: text, range: range).compactMap { Range($0.range, in: text).map { String(text[$0]) } })
    }

    /// A problem for each `FLEET_*` name in `text` that the worker does not read.
    static func unknownVariables(in text: String, file: String) -> [String] {
        fleetVariables(in: text).subtracting(knownVariables).sorted().map { "\(file): \($0) is not a worker key" }
    }

    // MARK: Dockerfile

    /// One `FROM` stage of a Dockerfile, with its instructions (continuation lines joined).
    struct DockerStage {
        var from: String
        var instructions: [(keyword: String, arguments: String)]

        func arguments(of keyword: String) -> [String] {
            instructions.filter { $0.keyword == keyword }.map(\.arguments)
        }
    }

    static func dockerStages(_ text: String) -> [DockerStage] {
        var logical: [String] = []
        var current = ""
        for line in text.components(separatedBy: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if current.isEmpty, trimmed.hasPrefix("#") || trimmed.isEmpty { continue }
            if trimmed.hasPrefix("#") { continue }
            if trimmed.hasSuffix("\\") {
                current += trimmed.dropLast() + " "
            } else {
                current += trimmed
                logical.append(current)
                current = ""
            }
        }
        if !current.isEmpty { logical.append(current) }
        var stages: [DockerStage] = []
        for instruction in logical {
            let parts = instruction.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard let first = parts.first else { continue }
            let keyword = first.uppercased()
            let arguments = parts.count > 1 ? String(parts[1]) : ""
            if keyword == "FROM" {
                stages.append(DockerStage(from: arguments, instructions: []))
            } else if !stages.isEmpty {
                stages[stages.count - 1].instructions.append((keyword, arguments))
            }
        }
        return stages
    }

    /// The packages a stage installs with `apt-get install` (or `apt install`).
    static func installedPackages(_ stage: DockerStage) -> [String] {
        var packages: [String] = []
        for run in stage.arguments(of: "RUN") {
            for command in run.components(separatedBy: "&&").flatMap({ $0.components(separatedBy: ";") }) {
                let words = command.split(whereSeparator: \.isWhitespace).map(String.init)
                guard let apt = words.firstIndex(where: { $0 == "apt-get" || $0 == "apt" }),
                      let install = words[apt...].firstIndex(of: "install") else { continue }
                packages += words[(install + 1)...].filter { !$0.hasPrefix("-") }
            }
        }
        return packages
    }

    /// What a runtime stage must not install: compilers, toolchains, headers.
    static func isBuildTool(_ package: String) -> Bool {
        let tools: Set<String> = ["gcc", "g++", "clang", "cc", "swift", "swiftlang", "build-essential", "make", "binutils", "libc6-dev"]
        return tools.contains(package) || package.hasPrefix("gcc-") || package.hasPrefix("clang-")
            || package.hasPrefix("g++-") || package.hasSuffix("-dev")
    }

    static func dockerfileProblems(_ text: String, httpPort: Int) -> [String] {
        var problems: [String] = []
        let stages = dockerStages(text)
        guard stages.count >= 2, let build = stages.first, let runtime = stages.last else {
            return ["Dockerfile: \(stages.count) FROM stage(s), expected a build stage and a runtime stage"]
        }
        if !build.from.lowercased().hasPrefix("swift:6.") || !build.from.contains("bookworm") {
            problems.append("Dockerfile: the build stage is \(build.from), expected an official swift:6.x bookworm image")
        }
        let buildCommands = build.arguments(of: "RUN").joined(separator: "\n")
        for flag in ["swift build", "-c release", "--product fleet", "--static-swift-stdlib"] where !buildCommands.contains(flag) {
            problems.append("Dockerfile: the build stage does not run `\(flag)`")
        }
        if !installedPackages(build).contains("librabbitmq-dev") {
            problems.append("Dockerfile: the build stage does not install librabbitmq-dev")
        }
        if !runtime.from.hasPrefix("debian:bookworm-slim") {
            problems.append("Dockerfile: the runtime stage is \(runtime.from), expected debian:bookworm-slim")
        }
        let runtimePackages = installedPackages(runtime)
        if !runtimePackages.contains("librabbitmq4") {
            problems.append("Dockerfile: the runtime stage does not install librabbitmq4")
        }
        for package in runtimePackages where isBuildTool(package) {
            problems.append("Dockerfile: the runtime stage installs \(package), a build tool")
        }
        let user = runtime.arguments(of: "USER").last ?? "root"
        if user.hasPrefix("root") || user.hasPrefix("0") {
            problems.append("Dockerfile: the runtime stage runs as \(user)")
        }
        if !runtime.arguments(of: "EXPOSE").contains(where: { $0.split(separator: " ").contains { $0 == "\(httpPort)" || $0 == "\(httpPort)/tcp" } }) {
            problems.append("Dockerfile: the runtime stage does not EXPOSE \(httpPort)")
        }
        let copies = runtime.arguments(of: "COPY").joined(separator: "\n")
        if !copies.contains("topology.json /etc/fleet/topology.json") {
            problems.append("Dockerfile: topology.json is not copied to /etc/fleet/topology.json")
        }
        let environment = runtime.arguments(of: "ENV").joined(separator: " ")
        for setting in ["FLEET_TOPOLOGY=/etc/fleet/topology.json", "FLEET_HTTP_HOST=0.0.0.0"] where !environment.contains(setting) {
            problems.append("Dockerfile: the runtime stage does not set \(setting)")
        }
        if runtime.arguments(of: "ENTRYPOINT").last?.replacingOccurrences(of: " ", with: "") != "[\"fleet\"]" {
            problems.append("Dockerfile: ENTRYPOINT is not [\"fleet\"]")
        }
        if runtime.arguments(of: "CMD").last?.replacingOccurrences(of: " ", with: "") != "[\"worker\"]" {
            problems.append("Dockerfile: CMD is not [\"worker\"]")
        }
        let healthcheck = runtime.arguments(of: "HEALTHCHECK").joined()
        if !healthcheck.contains("/health/live") || !healthcheck.contains("9090") {
            problems.append("Dockerfile: HEALTHCHECK does not probe /health/live on the worker's port")
        }
        return problems
    }

    // MARK: metric names

    /// The metric names the fleet exports (the worker's and the process metrics).
    static let exportedMetrics: Set<String> = [
        "eventcore_processes_started_total", "eventcore_processes_completed_total", "eventcore_processes_failed_total",
        "eventcore_process_duration_seconds", "eventcore_active_processes",
        "fleet_messages_consumed_total", "fleet_messages_acked_total", "fleet_messages_dead_lettered_total",
        "fleet_messages_retried_total", "fleet_handler_duration_seconds", "fleet_conflicts_retried_total",
        "fleet_in_flight_messages",
        // The worker's outbox, redelivery and timeout metrics.
        "fleet_messages_redelayed_total", "fleet_messages_obsolete_total", "fleet_idle_releases_total", "fleet_publications_total", "fleet_outbox_lag_seconds",
        "fleet_timeouts_scheduled_total", "fleet_timeouts_arrived_total",
        "fleet_messages_redelivered_total", "fleet_duplicates_absorbed_total",
        // Due times: lateness, holding, and the learnt cost of a delay hop.
        "fleet_timeout_lateness_seconds", "fleet_messages_held", "fleet_delay_hop_seconds",
    ]

    /// Histograms: queried through their `_bucket`, `_sum` and `_count` series.
    static let histograms: Set<String> = [
        "eventcore_process_duration_seconds", "fleet_handler_duration_seconds", "fleet_outbox_lag_seconds",
        "fleet_timeout_lateness_seconds",
    ]

    /// The series a query may name: the exported metrics, their histogram series, and Prometheus' own `up`.
    static let queryableSeries: Set<String> = exportedMetrics
        .union(histograms.flatMap { name in ["_bucket", "_sum", "_count"].map { name + $0 } })
        .union(["up"])

    private static let promQLWords: Set<String> = [
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
        "inf", "nan",
    ]

    /// The metric names a PromQL expression reads: identifiers that are not functions, aggregations, keywords,
    /// label names, durations or string contents.
    static func metricNames(inQuery query: String) -> Set<String> {
        var text = query
        func remove(_ pattern: String) {
            text = text.replacingOccurrences(of: pattern, with: " ", options: .regularExpression)
        }
        remove("\"(\\\\.|[^\"\\\\])*\"")        // strings
        remove("'(\\\\.|[^'\\\\])*'")
        remove("\\{[^}]*\\}")                     // label matchers
        remove("\\[[^\\]]*\\]")                   // ranges and subqueries
        remove("\\b(by|without|on|ignoring|group_left|group_right)\\s*\\([^)]*\\)") // label lists
        remove("\\$\\w+")                         // dashboard variables
        let identifier = try! NSRegularExpression(pattern: "[A-Za-z_:][A-Za-z0-9_:]*(\\s*\\()?")
        var names: Set<String> = []
        for match in identifier.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            guard let range = Range(match.range, in: text) else { continue }
            let token = String(text[range])
            if token.hasSuffix("(") { continue }  // a function or an aggregation
            if promQLWords.contains(token.lowercased()) { continue }
            if let start = Range(match.range, in: text)?.lowerBound, start > text.startIndex,
               text[text.index(before: start)].isNumber || text[text.index(before: start)] == "." {
                continue  // the exponent or unit of a number
            }
            names.insert(token)
        }
        return names
    }

    static func unknownMetrics(inQuery query: String, source: String) -> [String] {
        metricNames(inQuery: query).subtracting(queryableSeries).sorted().map { "\(source): \($0) is not a metric the fleet exports" }
    }

    // MARK: topology

    /// Whether two JSON values are equal (objects by keys, arrays in order, numbers by value).
    static func jsonEqual(_ a: Any, _ b: Any) -> Bool {
        // Canonical forms (sorted keys) compare objects by keys and arrays in order.
        func canonical(_ value: Any) -> Data? {
            try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
        }
        guard let left = canonical(a), let right = canonical(b) else { return false }
        return left == right
    }
}
