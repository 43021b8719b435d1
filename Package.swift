// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "ProcessFleet",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AMQP", targets: ["AMQP"]),
        .library(name: "EventCore", targets: ["EventCore"]),
        .library(name: "EventStoreSQLite", targets: ["EventStoreSQLite"]),
        .library(name: "EventStorePostgres", targets: ["EventStorePostgres"]),
        .library(name: "Processes", targets: ["Processes"]),
        .library(name: "Fleet", targets: ["Fleet"]),
        .library(name: "EventCoreTestKit", targets: ["EventCoreTestKit"]),
        .executable(name: "fleet", targets: ["FleetCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // The C boundary: librabbitmq through pkg-config, and a shim for what Swift cannot call.
        // glibc's malloc.h, for giving an idle worker's free memory back.
        .systemLibrary(name: "CMalloc"),
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        .target(
            name: "AMQP",
            dependencies: [
                "CRabbitMQ",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "EventCore"),
        .target(
            name: "EventStoreSQLite",
            dependencies: [
                "EventCore",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "EventStorePostgres",
            dependencies: [
                "EventCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Processes",
            dependencies: ["EventCore", .product(name: "Metrics", package: "swift-metrics")]
        ),
        .target(name: "OrderFulfillment", dependencies: ["Processes"]),
        .target(
            name: "Fleet",
            dependencies: [
                "AMQP", "CMalloc", "EventCore", "Processes",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(name: "EventCoreTestKit", dependencies: ["EventCore"]),
        // Commands/s of a two-stream command on every store, against pgbench for PostgreSQL; also the transfer
        // worker that the two-process concurrency tests start.
        .executableTarget(
            name: "EventStoreBenchmark",
            dependencies: [
                "EventCore", "EventCoreTestKit", "EventStoreSQLite", "EventStorePostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "FleetSimulation",
            dependencies: [
                "Fleet", "AMQP", "OrderFulfillment", "EventCore", "EventStoreSQLite", "EventStorePostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .executableTarget(
            name: "FleetCLI",
            dependencies: [
                "Fleet", "AMQP", "FleetSimulation", "EventCore", "Processes", "OrderFulfillment", "EventStoreSQLite", "EventStorePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // Baseline for the AMQP benchmark: the same work written directly against librabbitmq in C.
        .target(
            name: "CRabbitMQBaseline",
            dependencies: ["CRabbitMQ"],
            linkerSettings: [.linkedLibrary("rabbitmq")]
        ),
        .executableTarget(
            name: "AMQPBenchmark",
            dependencies: ["AMQP", "CRabbitMQBaseline"]
        ),
        // The envelope decoder, the order router's payload decoding and the topology loader under libFuzzer
        // (`scripts/fuzz`); built normally it replays inputs given as files.
        .executableTarget(name: "EnvelopeFuzz", dependencies: ["Fleet", "AMQP", "EventCore", "OrderFulfillment", "Processes"]),
        .target(name: "FleetTestSupport", dependencies: ["AMQP"], path: "Tests/FleetTestSupport"),
        .testTarget(name: "AMQPTests", dependencies: ["AMQP", "FleetTestSupport"]),
        .testTarget(
            name: "EventCoreTests",
            dependencies: ["EventCore", "EventCoreTestKit", "EventStoreSQLite", "EventStorePostgres"]
        ),
        .testTarget(
            name: "ProcessesTests",
            dependencies: [
                "Processes", "OrderFulfillment", "EventCore", "EventCoreTestKit", "EventStoreSQLite", "EventStorePostgres",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "FleetTests", dependencies: ["Fleet", "AMQP", "EventCore", "EventCoreTestKit", "Processes", "FleetTestSupport", "FleetSimulation", "OrderFulfillment"]),
        // The deployment artifacts (Dockerfile, compose, Kubernetes, Prometheus, Grafana) checked against the worker.
        .testTarget(name: "DeployTests", dependencies: ["Fleet", .product(name: "Yams", package: "Yams")]),
    ],
    swiftLanguageModes: [.v6]
)
