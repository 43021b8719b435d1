import Fleet
import Foundation
import Testing

/// The Kubernetes manifests agree with the worker and with each other.
@Suite struct KubernetesTests {
    static let folder = "deploy/kubernetes"
    static let deploymentPath = "deploy/kubernetes/deployment.yaml"

    /// Every manifest of the folder (the adapter's Helm values are not one).
    static var manifestPaths: [String] {
        RepositoryFiles.files(under: folder, endingWith: [".yaml", ".yml"])
            .filter { !$0.hasSuffix("prometheus-adapter-values.yaml") && !$0.hasSuffix("kustomization.yaml") }
    }

    static func manifests() throws -> [(path: String, object: YAMLValue)] {
        try manifestPaths.flatMap { path in try RepositoryFiles.yamlDocuments(path).map { (path, $0) } }
    }

    static func object(kind: String) throws -> YAMLValue {
        let found = try manifests().filter { $0.object["kind"]?.string == kind }
        guard found.count == 1, let object = found.first?.object else {
            throw RepositoryFiles.Missing(description: "\(found.count) \(kind) manifests, expected one")
        }
        return object
    }

    // MARK: checks

    /// The worker container of a Deployment.
    static func workerContainer(_ deployment: YAMLValue) -> YAMLValue? {
        deployment["spec"]?["template"]?["spec"]?["containers"]?.array?.first { $0["name"]?.string == "worker" }
    }

    static func environment(_ container: YAMLValue) -> [String: YAMLValue] {
        var result: [String: YAMLValue] = [:]
        for variable in container["env"]?.array ?? [] {
            if let name = variable["name"]?.string { result[name] = variable }
        }
        return result
    }

    /// A probe's or Service's port: a number, or the name of one of the container's ports.
    static func resolvePort(_ port: YAMLValue?, in container: YAMLValue) -> Int? {
        if let number = port?.int { return number }
        guard let name = port?.string else { return nil }
        return container["ports"]?.array?.first { $0["name"]?.string == name }?["containerPort"]?.int
    }

    static func deploymentProblems(_ deployment: YAMLValue, configuration: WorkerConfiguration = WorkerConfiguration()) -> [String] {
        var problems: [String] = []
        guard let container = workerContainer(deployment), let pod = deployment["spec"]?["template"]?["spec"] else {
            return ["Deployment: no container named worker"]
        }
        if deployment["spec"]?["replicas"]?.int != 3 { problems.append("Deployment: replicas is not 3") }
        let env = environment(container)

        // Probes and ports.
        let expected = [("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")]
        for (probe, path) in expected {
            let get = container[probe]?["httpGet"]
            if get?["path"]?.string != path { problems.append("Deployment: \(probe) path is not \(path)") }
            if resolvePort(get?["port"], in: container) != configuration.httpPort {
                problems.append("Deployment: \(probe) port is not \(configuration.httpPort)")
            }
        }
        if let startup = container["startupProbe"]?["httpGet"] {
            if startup["path"]?.string != "/health/live" { problems.append("Deployment: startupProbe path is not /health/live") }
            if resolvePort(startup["port"], in: container) != configuration.httpPort {
                problems.append("Deployment: startupProbe port is not \(configuration.httpPort)")
            }
        }
        if let port = env["FLEET_HTTP_PORT"]?["value"]?.scalarText, Int(port) != configuration.httpPort {
            problems.append("Deployment: FLEET_HTTP_PORT is \(port), the probes expect \(configuration.httpPort)")
        }
        if env["FLEET_HTTP_HOST"]?["value"]?.string != "0.0.0.0" {
            problems.append("Deployment: FLEET_HTTP_HOST is not 0.0.0.0, so the kubelet cannot probe")
        }

        // Shutdown.
        let grace = env["FLEET_SHUTDOWN_GRACE_SECONDS"]?["value"]?.scalarText.flatMap { Int($0) } ?? configuration.shutdownGraceSeconds
        let termination = pod["terminationGracePeriodSeconds"]?.int ?? 30
        if termination <= grace {
            problems.append("Deployment: terminationGracePeriodSeconds \(termination) is not greater than FLEET_SHUTDOWN_GRACE_SECONDS \(grace)")
        }

        // Secrets come from a mounted Secret or a secretKeyRef, never a literal value; the store is PostgreSQL.
        for key in WorkerConfiguration.keys where key.isSecret {
            if env[key.name]?["value"] != nil {
                problems.append("Deployment: the secret \(key.name) has a literal value")
            }
        }
        for required in ["FLEET_AMQP_URL", "FLEET_STORE_URL"] {
            let direct = env[required]?["valueFrom"]?["secretKeyRef"] != nil
            let file = env[required + "_FILE"]?["value"]?.string
            if !direct && file == nil { problems.append("Deployment: \(required) comes from no Secret") }
            if let file {
                let mounted = (container["volumeMounts"]?.array ?? []).contains { mount in
                    guard let path = mount["mountPath"]?.string, file.hasPrefix(path + "/"),
                          let name = mount["name"]?.string else { return false }
                    return (pod["volumes"]?.array ?? []).contains { $0["name"]?.string == name && $0["secret"] != nil }
                }
                if !mounted { problems.append("Deployment: \(required)_FILE \(file) is not in a mounted Secret") }
            }
        }
        if let store = env["FLEET_STORE_URL"]?["value"]?.string, !store.hasPrefix("postgres") {
            problems.append("Deployment: the store is \(store), not PostgreSQL")
        }

        // The topology file is the mounted ConfigMap.
        if let topology = env["FLEET_TOPOLOGY"]?["value"]?.string {
            let mounted = (container["volumeMounts"]?.array ?? []).contains { mount in
                guard let path = mount["mountPath"]?.string, topology == path + "/topology.json",
                      let name = mount["name"]?.string else { return false }
                return (pod["volumes"]?.array ?? []).contains { $0["name"]?.string == name && $0["configMap"]?["name"]?.string == "fleet-topology" }
            }
            if !mounted { problems.append("Deployment: FLEET_TOPOLOGY \(topology) is not the mounted ConfigMap fleet-topology") }
        } else {
            problems.append("Deployment: FLEET_TOPOLOGY is not set")
        }

        // Resources and security.
        if let memory = container["resources"]?["limits"]?["memory"]?.string, let mebibytes = mebibytes(memory) {
            if !(128...256).contains(mebibytes) { problems.append("Deployment: memory limit \(memory) is outside 128Mi-256Mi") }
        } else {
            problems.append("Deployment: no memory limit")
        }
        if container["resources"]?["requests"]?["cpu"] == nil || container["resources"]?["requests"]?["memory"] == nil {
            problems.append("Deployment: no cpu and memory requests")
        }
        let security = container["securityContext"]
        if security?["readOnlyRootFilesystem"]?.raw as? Bool != true { problems.append("Deployment: the root filesystem is writable") }
        if security?["allowPrivilegeEscalation"]?.raw as? Bool != false { problems.append("Deployment: privilege escalation is allowed") }
        let nonRoot = (security?["runAsNonRoot"]?.raw as? Bool) ?? (pod["securityContext"]?["runAsNonRoot"]?.raw as? Bool)
        if nonRoot != true { problems.append("Deployment: runAsNonRoot is not set") }
        return problems
    }

    static func mebibytes(_ quantity: String) -> Int? {
        if quantity.hasSuffix("Mi") { return Int(quantity.dropLast(2)) }
        if quantity.hasSuffix("Gi") { return Int(quantity.dropLast(2)).map { $0 * 1024 } }
        return nil
    }

    static func serviceProblems(_ service: YAMLValue, deployment: YAMLValue, httpPort: Int) -> [String] {
        guard let container = workerContainer(deployment) else { return ["Service: no worker container to select"] }
        var problems: [String] = []
        let podLabels = deployment["spec"]?["template"]?["metadata"]?["labels"]?.mapping?.mapValues(\.string) ?? [:]
        let selector = service["spec"]?["selector"]?.mapping?.mapValues(\.string) ?? [:]
        if selector.isEmpty || selector.contains(where: { podLabels[$0.key] != $0.value }) {
            problems.append("Service: its selector does not select the worker pods")
        }
        let ports = service["spec"]?["ports"]?.array ?? []
        if !ports.contains(where: { $0["port"]?.int == httpPort && resolvePort($0["targetPort"], in: container) == httpPort }) {
            problems.append("Service: no port \(httpPort) onto the worker's port \(httpPort)")
        }
        return problems
    }

    static func disruptionBudgetProblems(_ budget: YAMLValue, deployment: YAMLValue) -> [String] {
        var problems: [String] = []
        let minAvailable = budget["spec"]?["minAvailable"]?.int
        let maxUnavailable = budget["spec"]?["maxUnavailable"]?.int
        if minAvailable != 2 && maxUnavailable != 1 {
            problems.append("PodDisruptionBudget: neither minAvailable 2 nor maxUnavailable 1")
        }
        if let minAvailable, let replicas = deployment["spec"]?["replicas"]?.int, minAvailable >= replicas {
            problems.append("PodDisruptionBudget: minAvailable \(minAvailable) blocks every drain of \(replicas) replicas")
        }
        let podLabels = deployment["spec"]?["template"]?["metadata"]?["labels"]?.mapping?.mapValues(\.string) ?? [:]
        let selector = budget["spec"]?["selector"]?["matchLabels"]?.mapping?.mapValues(\.string) ?? [:]
        if selector.isEmpty || selector.contains(where: { podLabels[$0.key] != $0.value }) {
            problems.append("PodDisruptionBudget: its selector does not select the worker pods")
        }
        return problems
    }

    static func autoscalerProblems(_ autoscaler: YAMLValue, deployment: YAMLValue, budget: YAMLValue, topology: Any) -> [String] {
        var problems: [String] = []
        if autoscaler["apiVersion"]?.string != "autoscaling/v2" { problems.append("HPA: not autoscaling/v2") }
        let target = autoscaler["spec"]?["scaleTargetRef"]
        if target?["kind"]?.string != "Deployment" || target?["name"]?.string != deployment["metadata"]?["name"]?.string {
            problems.append("HPA: it does not scale the worker Deployment")
        }
        let minimum = autoscaler["spec"]?["minReplicas"]?.int ?? 1
        if let minAvailable = budget["spec"]?["minAvailable"]?.int, minimum <= minAvailable {
            problems.append("HPA: minReplicas \(minimum) leaves the PodDisruptionBudget (minAvailable \(minAvailable)) no room")
        }
        if (autoscaler["spec"]?["maxReplicas"]?.int ?? 0) < minimum { problems.append("HPA: maxReplicas below minReplicas") }
        let routeQueues = Set(((topology as? [String: Any])?["fleet"] as? [String: Any])?["routes"]
            .flatMap { $0 as? [[String: Any]] }?.compactMap { $0["queue"] as? String } ?? [])
        let external = (autoscaler["spec"]?["metrics"]?.array ?? []).filter { $0["type"]?.string == "External" }
        if external.isEmpty { problems.append("HPA: no External metric on queue depth") }
        for metric in external {
            if metric["external"]?["metric"]?["name"]?.string != "rabbitmq_queue_messages_ready" {
                problems.append("HPA: the external metric is not rabbitmq_queue_messages_ready")
            }
            let expressions = metric["external"]?["metric"]?["selector"]?["matchExpressions"]?.array ?? []
            let queues = expressions.filter { $0["key"]?.string == "queue" }.flatMap { $0["values"]?.array?.compactMap(\.string) ?? [] }
            if Set(queues) != routeQueues {
                problems.append("HPA: it watches \(queues.sorted()), the routes of topology.json consume \(routeQueues.sorted())")
            }
        }
        return problems
    }

    // MARK: tests

    @Test func theDeploymentAgreesWithTheWorker() throws {
        let deployment = try Self.object(kind: "Deployment")
        #expect(Self.deploymentProblems(deployment) == [])
    }

    @Test func theDeploymentChecksCatchBrokenVariants() throws {
        let text = try RepositoryFiles.text(Self.deploymentPath)
        let variants: [(String, String, String)] = [
            ("path: /health/live", "path: /healthz", "livenessProbe path"),
            ("path: /health/ready", "path: /ready", "readinessProbe path"),
            ("containerPort: 9090", "containerPort: 8080", "livenessProbe port"),
            ("terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 25", "terminationGracePeriodSeconds"),
            ("memory: 256Mi", "memory: 1Gi", "memory limit"),
            ("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "root filesystem"),
            ("value: /var/run/secrets/fleet/store-url", "value: /etc/fleet/store-url", "not in a mounted Secret"),
            ("mountPath: /etc/fleet\n", "mountPath: /etc/topology\n", "FLEET_TOPOLOGY"),
            ("replicas: 3", "replicas: 1", "replicas"),
        ]
        for (original, replacement, expected) in variants {
            #expect(text.contains(original), "the variant's original text \(original) is gone from the manifest")
            let broken = try YAMLValue.parse(text.replacingOccurrences(of: original, with: replacement))
            let problems = Self.deploymentProblems(broken)
            #expect(problems.contains { $0.contains(expected) }, "\(replacement): \(problems)")
        }
        // A literal secret is caught too.
        let literal = text.replacingOccurrences(
            of: "- name: FLEET_AMQP_URL_FILE\n              value: /var/run/secrets/fleet/amqp-url",
            with: "- name: FLEET_AMQP_URL\n              value: amqp://user:secret@broker/")
        #expect(Self.deploymentProblems(try YAMLValue.parse(literal)).contains { $0.contains("literal value") })
        // And a shutdown grace that outgrows the pod's termination period.
        #expect(!Self.deploymentProblems(try YAMLValue.parse(text.replacingOccurrences(of: "value: \"25\"", with: "value: \"45\""))).isEmpty)
    }

    @Test func theServiceExposesTheMetricsPort() throws {
        let deployment = try Self.object(kind: "Deployment")
        let service = try Self.object(kind: "Service")
        let port = WorkerConfiguration().httpPort
        #expect(Self.serviceProblems(service, deployment: deployment, httpPort: port) == [])
        #expect(!Self.serviceProblems(service, deployment: deployment, httpPort: port + 1).isEmpty)
    }

    @Test func theDisruptionBudgetAndAutoscalerFitTheDeployment() throws {
        let deployment = try Self.object(kind: "Deployment")
        let budget = try Self.object(kind: "PodDisruptionBudget")
        let autoscaler = try Self.object(kind: "HorizontalPodAutoscaler")
        let topology = try RepositoryFiles.json("topology.json")
        #expect(Self.disruptionBudgetProblems(budget, deployment: deployment) == [])
        #expect(Self.autoscalerProblems(autoscaler, deployment: deployment, budget: budget, topology: topology) == [])

        let budgetText = try RepositoryFiles.text("deploy/kubernetes/poddisruptionbudget.yaml")
        #expect(!Self.disruptionBudgetProblems(try YAMLValue.parse(budgetText.replacingOccurrences(of: "minAvailable: 2", with: "minAvailable: 3")), deployment: deployment).isEmpty)
        let autoscalerText = try RepositoryFiles.text("deploy/kubernetes/horizontalpodautoscaler.yaml")
        let missingQueue = try YAMLValue.parse(autoscalerText.replacingOccurrences(of: ", fleet.timeouts]", with: "]"))
        #expect(!Self.autoscalerProblems(missingQueue, deployment: deployment, budget: budget, topology: topology).isEmpty)
        let tooFew = try YAMLValue.parse(autoscalerText.replacingOccurrences(of: "minReplicas: 3", with: "minReplicas: 2"))
        #expect(!Self.autoscalerProblems(tooFew, deployment: deployment, budget: budget, topology: topology).isEmpty)
    }

    @Test func theConfigMapEmbedsTheRootTopology() throws {
        let configMap = try Self.object(kind: "ConfigMap")
        let embedded = try #require(configMap["data"]?["topology.json"]?.string)
        let root = try RepositoryFiles.json("topology.json")
        #expect(DeployChecks.jsonEqual(try JSONSerialization.jsonObject(with: Data(embedded.utf8)), root),
                "deploy/kubernetes/configmap-topology.yaml is stale: run deploy/kubernetes/render-configmap")
        #expect(configMap["metadata"]?["name"]?.string == "fleet-topology")

        // The comparison sees a one-value difference deep inside, and a reordered array.
        var altered = try #require(try JSONSerialization.jsonObject(with: Data(embedded.utf8)) as? [String: Any])
        var queues = try #require(altered["queues"] as? [[String: Any]])
        #expect(DeployChecks.jsonEqual(altered, root))
        queues[0]["durable"] = false
        altered["queues"] = queues
        #expect(!DeployChecks.jsonEqual(altered, root))
        queues[0]["durable"] = true
        altered["queues"] = Array(queues.reversed())
        #expect(!DeployChecks.jsonEqual(altered, root))
        altered["queues"] = queues
        #expect(DeployChecks.jsonEqual(altered, root))
    }

    @Test func kustomizationListsEveryManifest() throws {
        let kustomization = try RepositoryFiles.yaml("deploy/kubernetes/kustomization.yaml")
        let listed = Set(kustomization["resources"]?.array?.compactMap(\.string) ?? [])
        let present = Set(Self.manifestPaths.map { String($0.dropFirst(Self.folder.count + 1)) })
        #expect(listed == present)
        for (path, object) in try Self.manifests() {
            #expect(object["metadata"]?["namespace"]?.string == "processfleet" || object["kind"]?.string == "Namespace",
                    "\(path) is not in the processfleet namespace")
        }
    }
}
