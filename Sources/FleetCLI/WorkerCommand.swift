import AMQP
import ArgumentParser
import CoreMetrics
import EventCore
import Fleet
import Foundation
import Logging
import FleetSimulation
import OrderFulfillment
import Processes
import Prometheus
import ServiceLifecycle

/// `fleet worker`: one stateless worker of the fleet.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: consume the routed queues, advance processes, publish process events.",
        discussion: "Configuration comes from the FLEET_* environment (see the README); flags override it."
    )

    @Option(help: "Broker URL (FLEET_AMQP_URL).") var amqpURL: String?
    @Option(help: "Event store: SQLite path or postgres:// URL (FLEET_STORE_URL).") var store: String?
    @Option(help: "Topology file (FLEET_TOPOLOGY).") var topology: String?
    @Option(help: "Messages handled at once (FLEET_CONCURRENCY).") var concurrency: Int?
    @Option(help: "HTTP port, 0 for none (FLEET_HTTP_PORT).") var httpPort: Int?
    @Option(help: "This worker's name (FLEET_WORKER_ID).") var workerID: String?
    @Option(help: "File holding the admin API's bearer token; turns the admin API on (FLEET_ADMIN_TOKEN_FILE).") var adminTokenFile: String?
    @Flag(help: "Refuse to start unless the admin API is on (a token is configured).") var admin = false
    @OptionGroup var domain: DomainOptions

    func run() async throws {
        var configuration: WorkerConfiguration
        do {
            configuration = try WorkerConfiguration(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError(error.description)
        }
        if let amqpURL { configuration.amqpURL = amqpURL }
        if let store { configuration.storeURL = store }
        if let topology { configuration.topologyPath = topology }
        if let concurrency { configuration.concurrency = concurrency }
        if let httpPort { configuration.httpPort = httpPort }
        if let workerID { configuration.workerID = workerID }
        do {
            if let adminTokenFile { try configuration.readAdminToken(fromFile: adminTokenFile) }
            try configuration.validateAdminAPI(required: admin)
        } catch {
            throw ValidationError(error.description)
        }
        try await WorkerRuntime.run(configuration: configuration, domain: domain)
    }
}

/// Settings of the example domain's processes (short values make demos and tests quick).
struct DomainOptions: ParsableArguments {
    @Option(help: "Seconds an order step may take before its timeout fires.") var orderStepTimeout: Int = 86_400
    @Option(help: "Seconds an order may take in all.") var orderDeadline: Int = 7 * 86_400
    @Option(help: "Retries of a timed-out order step before the order fails.") var orderRetries: Int = 3
    @Option(help: "Seconds before the first retry of a timed-out step (doubling).") var orderRetryDelay: Int = 3600

    var orderProcess: OrderFulfillmentProcess {
        OrderFulfillmentProcess(timeoutPolicy: ProcessTimeoutPolicy(
            stepTimeout: .seconds(orderStepTimeout), overallTimeout: .seconds(orderDeadline),
            retryPolicy: RetryPolicy(maxRetries: orderRetries,
                                     backoff: .exponential(initial: .seconds(orderRetryDelay), multiplier: 2, maximum: .seconds(orderRetryDelay * 8)),
                                     jitter: 0)))
    }
}

/// Wires a worker: store, handlers, metrics, HTTP endpoint, signals.
enum WorkerRuntime {
    static func run(configuration: WorkerConfiguration, domain: DomainOptions) async throws {
        var logger = Logger(label: "fleet.worker")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        logger[metadataKey: "worker"] = "\(configuration.workerID)"
        let topology = try Topology.loadForCommand(configuration.topologyPath)
        let registry = PrometheusCollectorRegistry()
        let metricsFactory = PrometheusMetricsFactory(registry: registry)
        let store = try await StoreConnection.open(configuration.storeURL, maximumPayloadBytes: configuration.maximumBodyBytes, logger: logger)
        logger.info("worker: store open", metadata: ["store": "\(store.description)"])

        let cache = configuration.streamCacheMiB > 0
            ? StreamCache(maximumBytes: configuration.streamCacheMiB << 20, verification: configuration.streamCacheVerify == "read" ? .onRead : .onAppend)
            : nil
        let cacheMetrics = cache.map { StreamCacheMetrics(cache: $0, factory: metricsFactory) }
        let runtime = ProcessRuntime(executor: CommandExecutor(store: store.store, cache: cache), metrics: ProcessMetrics(factory: metricsFactory))
        let handlers: [String: any MessageHandler] = [
            "order-fulfillment": ProcessMessageHandler(
                router: OrderFulfillmentRouter(consumer: "order-fulfillment", handler: OrderFulfillmentHandler(process: domain.orderProcess)),
                runtime: runtime),
            "travel-booking": TravelMessageHandler(runtime: runtime),
            "timeouts": TimeoutMessageHandler(runtime: runtime),
        ]
        let worker = try Worker(configuration: configuration, topology: topology, handlers: handlers, logger: logger,
                                metrics: WorkerMetrics(factory: metricsFactory), whenIdle: {
            cache?.removeAll()
            FreedMemory.giveBack()
        })

        var services: [any Service] = [WorkerService(worker: worker, grace: .seconds(configuration.shutdownGraceSeconds), logger: logger)]
        if configuration.httpPort > 0 {
            let probe = ReadinessProbe(worker: worker, store: store.store)
            // Without a token the admin routes do not exist: /admin/... is a 404 like any unknown path.
            let admin = try configuration.adminToken.map { token in
                try AdminAPI(token: token, broker: try AMQPConfiguration(url: configuration.amqpURL), store: store.store, topology: topology,
                             retries: ProcessCommand.retries, logger: logger)
            }
            if admin != nil { logger.info("http: admin API on", metadata: ["prefix": "\(AdminAPI.prefix)"]) }
            services.append(HTTPService(host: configuration.httpHost, port: configuration.httpPort, logger: logger) { request in
                if let admin, let reply = await admin.handle(request) { return reply }
                switch (request.method, request.path) {
                case ("GET", "/metrics"):
                    cacheMetrics?.update()
                    return HTTPReply(status: 200, contentType: "text/plain; version=0.0.4", body: registry.emitToBuffer())
                case ("GET", "/health/live"):
                    return .text(200, "ok\n")
                case ("GET", "/health/ready"):
                    let problems = await probe.problems()
                    return problems.isEmpty ? .text(200, "ready\n") : .text(503, problems.joined(separator: "\n") + "\n")
                default:
                    return .text(404, "not found\n")
                }
            })
        }
        var groupConfiguration = ServiceGroupConfiguration(services: services.map { .init(service: $0) },
                                                           gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [], logger: logger)
        // Past the grace period, messages still in hand are abandoned (cancelled); the broker redelivers them.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(configuration.shutdownGraceSeconds)
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch {
            await store.close()
            throw error
        }
        await store.close()
    }
}

/// What `/health/ready` checks: the worker consumes, its broker connections are up, and the store answers.
struct ReadinessProbe: Sendable {
    let worker: Worker
    let store: any EventStore

    func problems() async -> [String] {
        var problems: [String] = []
        if !worker.isReady { problems.append("worker: not consuming") }
        if !worker.isConnectedToBroker { problems.append("broker: not connected (recovering a lost connection)") }
        do {
            _ = try await store.read(stream: StreamID("fleet-readiness-probe"))
        } catch {
            problems.append("store: \(error)")
        }
        return problems
    }
}

/// The worker as a service: graceful shutdown drains it, within the grace period.
struct WorkerService: Service {
    let worker: Worker
    let grace: Duration
    let logger: Logger

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await worker.run()
        } onGracefulShutdown: {
            logger.info("worker: stopping; finishing messages in hand", metadata: ["grace": "\(grace)"])
            Task { await worker.shutdown() }
        }
    }
}

/// The HTTP endpoint as a service.
struct HTTPService: Service {
    let host: String
    let port: Int
    let logger: Logger
    let router: HTTPEndpoint.Router

    init(host: String, port: Int, logger: Logger, router: @escaping HTTPEndpoint.Router) {
        self.host = host
        self.port = port
        self.logger = logger
        self.router = router
    }

    func run() async throws {
        let endpoint = try await HTTPEndpoint.start(host: host, port: port, logger: logger, router: router)
        logger.info("http: listening", metadata: ["address": "\(host):\(endpoint.port)"])
        try? await gracefulShutdown()
        await endpoint.stop()
    }
}
