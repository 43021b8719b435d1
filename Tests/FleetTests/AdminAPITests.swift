import AMQP
import EventCore
import Fleet
import FleetTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Testing

/// The admin API's routing, authorization and errors, in process (no worker, no broker needed for most).
@Suite("Admin API: routing and errors")
struct AdminAPIRoutingTests {
    static let token = "routing-test-token-0123456789"

    static var logger: Logger {
        var logger = Logger(label: "test.admin")
        logger.logLevel = .warning
        return logger
    }

    static func api(broker: String? = "amqp://guest:guest@127.0.0.1:1/", store: (any EventStore)? = nil) throws -> AdminAPI {
        let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
        return try AdminAPI(token: token, broker: try broker.map { try AMQPConfiguration(url: $0) }, store: store, topology: topology,
                            logger: logger)
    }

    static func request(_ method: String, _ path: String, query: [String: String] = [:], body: String = "",
                        authorization: String? = "Bearer \(token)") -> HTTPRequest {
        HTTPRequest(method: method, path: path, query: query, headers: authorization.map { ["authorization": $0] } ?? [:], body: Array(body.utf8))
    }

    static func error(_ reply: HTTPReply) -> String {
        (try? JSONDecoder().decode([String: String].self, from: Data(reply.body)))?["error"] ?? "<not a JSON error: \(String(decoding: reply.body, as: UTF8.self))>"
    }

    @Test func shortOrEmptyTokensAreRefusedWithoutShowingThem() throws {
        for token in ["", "   ", "short-secret"] {
            let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
            #expect(throws: AdminAPI.Refused.self) {
                try AdminAPI(token: token, broker: nil, store: nil, topology: topology, logger: Self.logger)
            }
            do {
                _ = try AdminAPI(token: token, broker: nil, store: nil, topology: topology, logger: Self.logger)
            } catch {
                #expect(token.isEmpty || !error.description.contains(token.trimmingCharacters(in: .whitespaces)))
            }
        }
    }

    @Test func pathsOutsideTheAdminPrefixAreNotItsBusiness() async throws {
        let api = try Self.api()
        #expect(await api.handle(Self.request("GET", "/metrics")) == nil)
        #expect(await api.handle(Self.request("GET", "/administrator")) == nil)
        #expect(await api.handle(Self.request("GET", "/admin/processes")) != nil)
    }

    @Test func aMissingOrWrongTokenIs401WithAJSONError() async throws {
        let api = try Self.api()
        let wrong = String(Self.token.dropLast()) + "X"
        for authorization in [nil, "Bearer \(wrong)", "Bearer \(Self.token)extra", "Bearer ", "Basic \(Self.token)", Self.token, "Bearer short"] {
            for path in ["/admin/processes", "/admin/no-such-route", "/admin"] {
                let reply = try #require(await api.handle(Self.request("GET", path, authorization: authorization)))
                #expect(reply.status == 401, "\(authorization ?? "none") \(path)")
                #expect(reply.contentType == "application/json")
                #expect(reply.headers["WWW-Authenticate"] == "Bearer")
                #expect(Self.error(reply).contains("bearer token"))
                #expect(!String(decoding: reply.body, as: UTF8.self).contains(Self.token))
            }
        }
        // The scheme is case-insensitive, as HTTP says.
        let reply = try #require(await api.handle(Self.request("GET", "/admin/no-such-route", authorization: "bearer \(Self.token)")))
        #expect(reply.status == 404)
    }

    @Test func tokensCompareExactly() {
        let token = Array("0123456789abcdef".utf8)
        #expect(AdminAPI.constantTimeEqual(token, token))
        #expect(!AdminAPI.constantTimeEqual(Array("0123456789abcdeF".utf8), token))
        #expect(!AdminAPI.constantTimeEqual(Array("0123456789abcde".utf8), token))
        #expect(!AdminAPI.constantTimeEqual(Array("0123456789abcdef0".utf8), token))
        #expect(!AdminAPI.constantTimeEqual([], token))
    }

    @Test func unknownRoutesAre404AndWrongMethods405WithAllow() async throws {
        let api = try Self.api()
        for path in ["/admin", "/admin/nothing", "/admin/processes/a/b/c", "/admin/topology"] {
            let reply = try #require(await api.handle(Self.request("GET", path)))
            #expect(reply.status == 404, "\(path)")
            #expect(Self.error(reply).contains("no admin route"))
        }
        let cases: [(String, String, String)] = [
            ("PUT", "/admin/dead-letters", "DELETE, GET"), ("POST", "/admin/processes", "GET"), ("GET", "/admin/processes/x/retry", "POST"),
            ("GET", "/admin/timeouts/x", "DELETE"), ("DELETE", "/admin/processes/x", "GET"), ("POST", "/admin/topology/diff", "GET"),
        ]
        for (method, path, allowed) in cases {
            let reply = try #require(await api.handle(Self.request(method, path)))
            #expect(reply.status == 405, "\(method) \(path)")
            #expect(reply.headers["Allow"] == allowed, "\(method) \(path)")
        }
    }

    @Test func anIdMayHoldAnEncodedSlash() async throws {
        let api = try Self.api(broker: nil)
        var request = Self.request("GET", "/admin/dead-letters/a/b")
        request.encodedPath = "/admin/dead-letters/a%2Fb"
        // One segment: the dead-letter route, which answers 503 here (no broker), not 404 (no such route).
        #expect(try #require(await api.handle(request)).status == 503)
        #expect(try #require(await api.handle(Self.request("GET", "/admin/dead-letters/a/b"))).status == 404)
    }

    @Test func badInputIs400BeforeAnythingIsReached() async throws {
        // The broker (port 1) and the store (none) are unreachable: a 400 proves the input was refused first.
        let api = try Self.api()
        let cases: [(String, String, [String: String], String, String)] = [
            ("GET", "/admin/dead-letters", ["limit": "0"], "", "limit"),
            ("GET", "/admin/dead-letters", ["limit": "many"], "", "limit"),
            ("GET", "/admin/dead-letters", ["filter": "colour=red"], "", "unknown filter key"),
            ("GET", "/admin/dead-letters", ["bogus": "1"], "", "unknown query parameter"),
            ("DELETE", "/admin/dead-letters", ["confirm": "yes", "extra": "1"], "", "unknown query parameter"),
            ("POST", "/admin/dead-letters/requeue", [:], "not json", "JSON object"),
            ("POST", "/admin/dead-letters/requeue", [:], "[1, 2]", "JSON object"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"dryrun": true}"#, "unknown field"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"dryRun": "yes"}"#, "true or false"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"dryRun": 1}"#, "true or false"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"limit": 0}"#, "whole number"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"limit": 2.5}"#, "whole number"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"limit": true}"#, "whole number"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"filter": "type"}"#, "KEY=VALUE"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"to": ""}"#, "must name a queue"),
            ("POST", "/admin/dead-letters/requeue", [:], #"{"to": 5}"#, "must be a string"),
            ("GET", "/admin/processes", ["state": "sleeping"], "", "unknown state \"sleeping\""),
            ("GET", "/admin/processes", ["status": "running"], "", "unknown query parameter"),
            ("POST", "/admin/processes/x/retry", [:], #"{"by": 5}"#, "must be a string"),
            ("POST", "/admin/processes/x/retry", [:], #"{"by": ""}"#, "must not be empty"),
            ("POST", "/admin/processes/x/retry", [:], #"{"who": "me"}"#, "unknown field"),
            ("GET", "/admin/timeouts", ["limit": "1"], "", "unknown query parameter"),
        ]
        for (method, path, query, body, message) in cases {
            let reply = try #require(await api.handle(Self.request(method, path, query: query, body: body)))
            #expect(reply.status == 400, "\(method) \(path) \(query) \(body): \(reply.status) \(Self.error(reply))")
            #expect(Self.error(reply).contains(message), "\(method) \(path) \(query) \(body): \(Self.error(reply))")
        }
    }

    @Test func noBrokerOrStoreIs503() async throws {
        let unreachable = try Self.api()
        for (method, path) in [("GET", "/admin/dead-letters"), ("GET", "/admin/dead-letters/m-1"), ("POST", "/admin/dead-letters/requeue"),
                               ("GET", "/admin/processes"), ("GET", "/admin/processes/x"), ("GET", "/admin/timeouts"), ("DELETE", "/admin/timeouts/x")] {
            let reply = try #require(await unreachable.handle(Self.request(method, path)))
            #expect(reply.status == 503, "\(method) \(path): \(reply.status) \(Self.error(reply))")
            #expect(!Self.error(reply).contains("guest:guest"), "no password in errors")
        }
        let none = try Self.api(broker: nil)
        for path in ["/admin/dead-letters", "/admin/topology/diff"] {
            let reply = try #require(await none.handle(Self.request("GET", path)))
            #expect(reply.status == 503 && Self.error(reply).contains("no broker"))
        }
    }

    @Test func workerConfigurationRefusesAnAdminAPIItCannotServe() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-admin-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let empty = directory.appendingPathComponent("empty").path
        let short = directory.appendingPathComponent("short").path
        let good = directory.appendingPathComponent("good").path
        try Data("\n".utf8).write(to: URL(fileURLWithPath: empty))
        try Data("short-secret\n".utf8).write(to: URL(fileURLWithPath: short))
        try Data("  \(Self.token)\n".utf8).write(to: URL(fileURLWithPath: good))

        #expect(try WorkerConfiguration(environment: [:]).adminToken == nil, "off by default")
        #expect(try WorkerConfiguration(environment: ["FLEET_ADMIN_TOKEN_FILE": good]).adminToken == Self.token)
        #expect(try WorkerConfiguration(environment: ["FLEET_ADMIN_TOKEN": Self.token]).adminToken == Self.token)
        for (environment, key) in [(["FLEET_ADMIN_TOKEN_FILE": empty], "FLEET_ADMIN_TOKEN_FILE"), (["FLEET_ADMIN_TOKEN_FILE": short], "FLEET_ADMIN_TOKEN_FILE"),
                                   (["FLEET_ADMIN_TOKEN": "short-secret"], "FLEET_ADMIN_TOKEN"),
                                   (["FLEET_ADMIN_TOKEN_FILE": directory.appendingPathComponent("missing").path], "FLEET_ADMIN_TOKEN_FILE")] {
            do {
                _ = try WorkerConfiguration(environment: environment)
                Issue.record("accepted \(environment)")
            } catch {
                #expect(error.key == key)
                #expect(!error.description.contains("short-secret"))
            }
        }
        var configuration = WorkerConfiguration()
        #expect(throws: WorkerConfiguration.Invalid.self) { try WorkerConfiguration().validateAdminAPI(required: true) }
        try WorkerConfiguration().validateAdminAPI(required: false)
        for (path, problem) in [(empty, "empty"), (short, "at least 16"), (directory.appendingPathComponent("missing").path, "cannot read")] {
            do {
                try configuration.readAdminToken(fromFile: path)
                Issue.record("accepted \(path)")
            } catch {
                #expect(error.key == "--admin-token-file" && error.problem.contains(problem), "\(error)")
                #expect(!error.description.contains("short-secret"))
            }
        }
        #expect(configuration.adminToken == nil)
        try configuration.readAdminToken(fromFile: good)
        #expect(configuration.adminToken == Self.token)
        try configuration.validateAdminAPI(required: true)
        configuration.httpPort = 0
        let portless = configuration
        #expect(throws: WorkerConfiguration.Invalid.self) { try portless.validateAdminAPI(required: false) }
    }
}

/// The admin API of a real `fleet worker`, against the real broker and a SQLite store with real processes.
@Suite("Admin API: a worker's routes", .serialized, .timeLimit(.minutes(10)))
struct AdminAPITests {
    typealias Fleet = FleetEndToEndTests.Fleet
    static let token = "admin-test-token-\(UUID().uuidString)"

    /// HTTP calls to one worker.
    struct Client {
        let port: Int
        let token: String?

        struct Reply {
            var status: Int
            var body: Data
            var headers: [String: String]
            var text: String { String(decoding: body, as: UTF8.self) }
            var error: String { (try? JSONDecoder().decode([String: String].self, from: body))?["error"] ?? "<no error in \(text)>" }
            func decode<T: Decodable>(_ type: T.Type) throws -> T { try OperatorJSON.decode(type, body) }
        }

        func call(_ method: String, _ path: String, body: String? = nil) async throws -> Reply {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!, timeoutInterval: 120)
            request.httpMethod = method
            if let bearer = token { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
            if let body {
                request.httpBody = Data(body.utf8)
                request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            }
            let (data, response) = try await URLSession.shared.data(for: request)
            let http = response as? HTTPURLResponse
            var headers: [String: String] = [:]
            for (name, value) in http?.allHeaderFields ?? [:] { headers["\(name)".lowercased()] = "\(value)" }
            return Reply(status: http?.statusCode ?? 0, body: data, headers: headers)
        }
    }

    /// Starts a worker with `arguments` on a fresh virtual host and waits until it consumes and serves HTTP.
    static func withWorker(storeURL: String, arguments: [String], _ body: (Fleet, Int) async throws -> Void) async throws {
        try await Fleet.with(storeURL: storeURL) { fleet in
            let port = TestPorts.free()
            try fleet.startWorker(extraArguments: ["--http-port", String(port)] + arguments)
            let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
            let connection = try await AMQPConnection.connect(url: fleet.amqpURL)
            try await fleet.waitUntilConsuming(1, topology: topology, connection: connection)
            await connection.close()
            let client = Client(port: port, token: nil)
            let serving = try await TestBroker.eventually(30) { (try? await client.call("GET", "/health/live").status) == 200 }
            try #require(serving, "the worker does not serve HTTP on \(port)")
            try await body(fleet, port)
        }
    }

    @Test func theAdminAPIIsOffWithoutAToken() async throws {
        let path = ProcessFixture.temporaryStorePath("fleet-admin-off")
        defer { ProcessFixture.removeStore(path) }
        try await ProcessFixture.populate(path)
        try await Self.withWorker(storeURL: path, arguments: []) { _, port throws in
            for token: String? in [nil, Self.token] {
                let client = Client(port: port, token: token)
                for path in ["/admin/processes", "/admin/dead-letters", "/admin/timeouts"] {
                    #expect(try await client.call("GET", path).status == 404, "\(path)")
                }
                #expect(try await client.call("DELETE", "/admin/dead-letters?confirm=yes").status == 404)
            }
            #expect(try await Client(port: port, token: nil).call("GET", "/health/live").status == 200)
        }
    }

    @Test func aWorkerRefusesToStartWithAnAdminAPIItCannotProtect() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-admin-refused-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let empty = directory.appendingPathComponent("empty-token").path
        let short = directory.appendingPathComponent("short-token").path
        let good = directory.appendingPathComponent("good-token").path
        try Data("".utf8).write(to: URL(fileURLWithPath: empty))
        try Data("tiny-secret".utf8).write(to: URL(fileURLWithPath: short))
        try Data(Self.token.utf8).write(to: URL(fileURLWithPath: good))
        var environment = ProcessInfo.processInfo.environment
        for key in ["FLEET_ADMIN_TOKEN", "FLEET_ADMIN_TOKEN_FILE"] { environment[key] = nil }
        // The store and broker are never reached: these are refused while the configuration is read.
        environment["FLEET_STORE_URL"] = directory.appendingPathComponent("never.sqlite").path
        environment["FLEET_AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1/"
        var fromFile = environment
        fromFile["FLEET_ADMIN_TOKEN_FILE"] = empty
        let cases: [([String], [String: String], String)] = [
            (["--admin"], environment, "the admin API needs a token"),
            (["--admin-token-file", directory.appendingPathComponent("missing").path], environment, "cannot read"),
            (["--admin-token-file", empty], environment, "the admin token is empty"),
            (["--admin-token-file", short], environment, "at least 16 characters"),
            ([], fromFile, "FLEET_ADMIN_TOKEN_FILE: the admin token is empty"),
            (["--admin-token-file", good, "--http-port", "0"], environment, "port 0 turns off"),
        ]
        for (arguments, environment, message) in cases {
            let outcome = try await ChildProcess.run(Fleet.executable, ["worker"] + arguments, environment: environment, timeout: .seconds(60))
            #expect(outcome.exited && outcome.status != 0 && !outcome.timedOut, "\(arguments): \(outcome.status) \(outcome.output)")
            #expect(outcome.output.contains(message), "\(arguments): \(outcome.output)")
            #expect(!outcome.output.contains("tiny-secret") && !outcome.output.contains(Self.token), "a token in the output")
        }
    }

    struct DeadLetterList: Decodable {
        var queue: String
        var deadLetters: [DeadLetter]
    }

    struct Diff: Decodable {
        var matches: Bool
        var missing: [String]
        var extra: [String]
        var changed: [String]
    }

    @Test(arguments: ProcessFixture.Store.allCases)
    func everyRouteAnswersWithTheToken(store: ProcessFixture.Store) async throws {
        let path = store.makeURL("fleet-admin")
        defer { store.remove(path) }
        try await ProcessFixture.populate(path)
        let tokenFile = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-admin-token-\(UUID().uuidString)")
        try Data("\(Self.token)\n".utf8).write(to: tokenFile)
        defer { try? FileManager.default.removeItem(at: tokenFile) }

        try await Self.withWorker(storeURL: path, arguments: ["--admin-token-file", tokenFile.path]) { fleet, port in
            let client = Client(port: port, token: Self.token)
            let topology = try Topology.load(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("topology.json"))
            let connection = try await AMQPConnection.connect(url: fleet.amqpURL)
            defer { Task { await connection.close() } }

            // Authorization.
            for token: String? in [nil, "wrong-token-of-some-length", String(Self.token.dropLast()) + "!"] {
                let reply = try await Client(port: port, token: token).call("GET", "/admin/processes")
                #expect(reply.status == 401)
                #expect(reply.headers["www-authenticate"] == "Bearer")
                #expect(reply.error.contains("bearer token"))
            }
            #expect(try await client.call("GET", "/admin/nothing-here").status == 404)
            #expect(try await Client(port: port, token: nil).call("GET", "/admin/nothing-here").status == 401)

            // Processes.
            let all = try await client.call("GET", "/admin/processes")
            #expect(all.status == 200, "\(all.text)")
            let rows = try all.decode([String: [ProcessRow]].self)["processes"] ?? []
            #expect(Set(rows.map(\.processID)) == Set(ProcessFixture.all))
            let needing = try await client.call("GET", "/admin/processes?state=needsAttention").decode([String: [ProcessRow]].self)["processes"] ?? []
            #expect(needing.map(\.processID) == [ProcessFixture.stuckTrip])
            #expect(needing.first?.state.hasPrefix("needs attention: compensation of book_flight failed") == true)
            let failed = try await client.call("GET", "/admin/processes?state=failed").decode([String: [ProcessRow]].self)["processes"] ?? []
            #expect(failed.map(\.processID) == [ProcessFixture.failedOrder])
            let trips = try await client.call("GET", "/admin/processes?type=travel-booking").decode([String: [ProcessRow]].self)["processes"] ?? []
            #expect(Set(trips.map(\.processID)) == [ProcessFixture.completedTrip, ProcessFixture.stuckTrip])
            let badState = try await client.call("GET", "/admin/processes?state=sleeping")
            #expect(badState.status == 400 && badState.error.contains("unknown state \"sleeping\""))

            let shown = try await client.call("GET", "/admin/processes/\(ProcessFixture.runningOrders[0])")
            #expect(shown.status == 200, "\(shown.text)")
            let detail = try shown.decode(ProcessDetail.self)
            #expect(detail.process.processID == ProcessFixture.runningOrders[0])
            #expect(detail.process.state == "running")
            #expect(detail.process.pendingTimeout != nil)
            #expect(detail.history.first?.eventType == "ProcessStarted")
            #expect(detail.history.map(\.version) == Array(1...detail.history.count))
            let unknownProcess = try await client.call("GET", "/admin/processes/order-fulfillment-nobody")
            #expect(unknownProcess.status == 404 && unknownProcess.error.contains("no process \"order-fulfillment-nobody\""))

            // Retry: only a saga that needs attention, with a good body.
            let notApplicable = try await client.call("POST", "/admin/processes/\(ProcessFixture.runningOrders[0])/retry")
            #expect(notApplicable.status == 409 && notApplicable.error.contains("only a saga that needs attention"))
            let badBy = try await client.call("POST", "/admin/processes/\(ProcessFixture.stuckTrip)/retry", body: #"{"by": 42}"#)
            #expect(badBy.status == 400)
            #expect(try await client.call("POST", "/admin/processes/nobody/retry").status == 404)
            let stillStuck = try await client.call("GET", "/admin/processes/\(ProcessFixture.stuckTrip)").decode(ProcessDetail.self)
            #expect(stillStuck.process.state.hasPrefix("needs attention"), "a bad retry changed nothing")
            let retried = try await client.call("POST", "/admin/processes/\(ProcessFixture.stuckTrip)/retry", body: #"{"by": "admin-test"}"#)
            #expect(retried.status == 200, "\(retried.text)")
            let report = try retried.decode(ProcessRetryReport.self)
            #expect(report.process == ProcessFixture.stuckTrip && report.phase == "compensated" && report.state.hasPrefix("failed"))
            let afterRetry = try await client.call("GET", "/admin/processes/\(ProcessFixture.stuckTrip)").decode(ProcessDetail.self)
            #expect(afterRetry.history.contains { $0.eventType == "CompensationResumed" && $0.payload.contains("admin-test") })
            #expect(try await client.call("POST", "/admin/processes/\(ProcessFixture.stuckTrip)/retry").status == 409)
            #expect(try await client.call("GET", "/admin/processes/\(ProcessFixture.stuckTrip)/retry").status == 405)

            // Timeouts.
            let timeouts = try await client.call("GET", "/admin/timeouts").decode([String: [PendingTimeoutRow]].self)["timeouts"] ?? []
            #expect(Set(timeouts.map(\.processID)) == Set(ProcessFixture.runningOrders))
            let unknownTimeout = try await client.call("DELETE", "/admin/timeouts/no-such-timeout")
            #expect(unknownTimeout.status == 404 && unknownTimeout.error.contains("no pending timeout"))
            #expect(try await client.call("DELETE", "/admin/timeouts/\(timeouts[0].timeoutID)?now=1").status == 400)
            #expect((try await client.call("GET", "/admin/timeouts").decode([String: [PendingTimeoutRow]].self)["timeouts"] ?? []).count == 2,
                    "bad input cancelled nothing")
            let cancelled = try await client.call("DELETE", "/admin/timeouts/\(timeouts[0].timeoutID)")
            #expect(cancelled.status == 200, "\(cancelled.text)")
            #expect(try cancelled.decode([String: PendingTimeoutRow].self)["cancelled"] == timeouts[0])
            let byProcess = try await client.call("DELETE", "/admin/timeouts/\(timeouts[1].processID)")
            #expect(try byProcess.decode([String: PendingTimeoutRow].self)["cancelled"]?.timeoutID == timeouts[1].timeoutID)
            #expect((try await client.call("GET", "/admin/timeouts").decode([String: [PendingTimeoutRow]].self)["timeouts"] ?? []).isEmpty)
            #expect(try await client.call("GET", "/admin/processes/\(timeouts[0].processID)").decode(ProcessDetail.self).process.pendingTimeout == nil)

            // Dead letters: three, as the worker leaves them.
            let parking = "admin.parking"
            try await connection.declare(QueueDeclaration(name: parking, durable: false))
            let publisher = try await connection.makePublisher()
            let letters: [(id: String, type: String, reason: String)] = [
                ("dl-1", "TravelCapacityRequest", "retries-exhausted"), ("dl-2", "TravelCapacityRequest", "retries-exhausted"),
                ("dl/3", "Mystery", "unknown-type"),
            ]
            for letter in letters {
                var properties = AMQPProperties.persistent
                properties.messageID = letter.id
                properties.type = letter.type
                properties.headers = [
                    Envelope.Header.error: .string(letter.reason), Envelope.Header.errorDetail: .string("detail of \(letter.id)"),
                    Envelope.Header.worker: "w-gone", Envelope.Header.sourceQueue: "fleet.bookings", Envelope.Header.sourceRoutingKey: "hotel.capacity",
                ]
                try await publisher.publish(Data(#"{"letter":"\#(letter.id)"}"#.utf8), exchange: topology.fleet.deadLetterExchange,
                                            routingKey: "hotel.capacity", properties: properties)
            }
            await publisher.close()
            let dlq = DeadLetterQueue(connection: connection, queue: topology.fleet.deadLetterQueue)
            #expect(try await TestBroker.eventually(30) { try await dlq.count() == 3 })

            let listed = try await client.call("GET", "/admin/dead-letters")
            #expect(listed.status == 200, "\(listed.text)")
            let list = try listed.decode(DeadLetterList.self)
            #expect(list.queue == topology.fleet.deadLetterQueue)
            #expect(list.deadLetters.map(\.messageID) == ["dl-1", "dl-2", "dl/3"])
            #expect(list.deadLetters.allSatisfy { $0.sourceQueue == "fleet.bookings" && $0.worker == "w-gone" })
            #expect(try await client.call("GET", "/admin/dead-letters?limit=2").decode(DeadLetterList.self).deadLetters.count == 2)
            let filtered = try await client.call("GET", "/admin/dead-letters?filter=reason%3Dunknown-type").decode(DeadLetterList.self)
            #expect(filtered.deadLetters.map(\.messageID) == ["dl/3"])
            let slashed = try await client.call("GET", "/admin/dead-letters/dl%2F3")
            #expect(slashed.status == 200 && (try? slashed.decode(DeadLetter.self).messageID) == "dl/3", "\(slashed.text)")
            let shownLetter = try await client.call("GET", "/admin/dead-letters/dl-2")
            #expect(shownLetter.status == 200)
            let letter = try shownLetter.decode(DeadLetter.self)
            #expect(letter.messageID == "dl-2" && letter.reason == "retries-exhausted" && letter.detail == "detail of dl-2" && letter.body == #"{"letter":"dl-2"}"#)
            let unknownLetter = try await client.call("GET", "/admin/dead-letters/dl-404")
            #expect(unknownLetter.status == 404 && unknownLetter.error.contains("no dead letter with message id \"dl-404\""))
            let unknownQueue = try await client.call("GET", "/admin/dead-letters?queue=no.such.queue")
            #expect(unknownQueue.status == 404 && unknownQueue.error.contains("no.such.queue"))
            #expect(try await client.call("GET", "/admin/dead-letters?limit=0").status == 400)
            #expect(try await client.call("GET", "/admin/dead-letters?filter=colour%3Dred").status == 400)

            // Requeue: bad input first, nothing moves.
            for (body, status) in [(#"{"dryrun": true}"#, 400), (#"{"filter": "colour=red"}"#, 400), (#"{"limit": -1}"#, 400), ("{", 400),
                                   (#"{"to": "no.such.queue"}"#, 404)] {
                let reply = try await client.call("POST", "/admin/dead-letters/requeue", body: body)
                #expect(reply.status == status, "\(body): \(reply.status) \(reply.text)")
                #expect(reply.error.count > 10, "\(body): \(reply.text)")
            }
            #expect(try await TestBroker.eventually(10) { try await dlq.count() == 3 }, "bad requeues moved nothing")
            #expect(try await connection.declare(QueueDeclaration(name: parking, durable: false), passive: true).messageCount == 0)
            let dry = try await client.call("POST", "/admin/dead-letters/requeue", body: #"{"dryRun": true}"#)
            #expect(dry.status == 200, "\(dry.text)")
            let dryReport = try dry.decode(DeadLetterRequeueReport.self)
            #expect(dryReport.dryRun && dryReport.requeued == ["fleet.bookings": 3] && dryReport.total == 3)
            #expect(try await TestBroker.eventually(10) { try await dlq.count() == 3 }, "a dry run moves nothing")
            let moved = try await client.call("POST", "/admin/dead-letters/requeue",
                                              body: #"{"filter": "reason=unknown-type", "to": "\#(parking)", "limit": 5, "dryRun": false}"#)
            #expect(moved.status == 200, "\(moved.text)")
            let movedReport = try moved.decode(DeadLetterRequeueReport.self)
            #expect(movedReport.requeued == [parking: 1] && movedReport.failures.isEmpty && !movedReport.dryRun)
            #expect(try await TestBroker.eventually(10) { try await dlq.count() == 2 })
            #expect(try await TestBroker.eventually(10) {
                try await connection.declare(QueueDeclaration(name: parking, durable: false), passive: true).messageCount == 1
            })

            // Purge: only with confirm=yes.
            let unconfirmed = try await client.call("DELETE", "/admin/dead-letters")
            #expect(unconfirmed.status == 400 && unconfirmed.error.contains("confirm=yes"))
            #expect(try await dlq.count() == 2)
            #expect(try await client.call("DELETE", "/admin/dead-letters?queue=no.such.queue&confirm=yes").status == 404)
            #expect(try await client.call("PUT", "/admin/dead-letters").headers["allow"] == "DELETE, GET")
            let purged = try await client.call("DELETE", "/admin/dead-letters?confirm=yes")
            #expect(purged.status == 200, "\(purged.text)")
            #expect(try purged.decode(PurgeAnswer.self).purged == 2)
            #expect(try await dlq.count() == 0)

            // Topology: the worker declared its file; the parking queue is extra.
            let diff = try await client.call("GET", "/admin/topology/diff")
            #expect(diff.status == 200, "\(diff.text)")
            let difference = try diff.decode(Diff.self)
            #expect(difference.missing.isEmpty && difference.changed.isEmpty, "\(diff.text)")
            #expect(difference.extra.contains("queue \(parking)") && !difference.matches)
            _ = try await connection.deleteQueue(parking)

            // The token is in no reply, no metric, no log line.
            let metrics = try await Client(port: port, token: nil).call("GET", "/metrics").text
            #expect(!metrics.contains(Self.token))
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("\(fleet.vhost)-worker-1.log")
            let logged = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            #expect(!logged.contains(Self.token))
        }
    }

    struct PurgeAnswer: Decodable {
        var queue: String
        var purged: Int
    }
}
