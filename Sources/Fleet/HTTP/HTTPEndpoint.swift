import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// A response of the worker's HTTP endpoint.
public struct HTTPReply: Sendable {
    /// The status code.
    public var status: Int
    /// The content type.
    public var contentType: String
    /// The body.
    public var body: [UInt8]
    /// Headers besides Content-Type, Content-Length and Connection (`Allow`, `WWW-Authenticate`).
    public var headers: [String: String]

    /// A reply.
    public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: [UInt8], headers: [String: String] = [:]) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    /// A text reply.
    public static func text(_ status: Int, _ text: String) -> HTTPReply {
        HTTPReply(status: status, body: Array(text.utf8))
    }

    /// A JSON reply.
    public static func json(_ status: Int, _ data: Data) -> HTTPReply {
        HTTPReply(status: status, contentType: "application/json", body: Array(data))
    }
}

/// A request as the endpoint's router sees it.
public struct HTTPRequest: Sendable {
    /// GET, POST, ...
    public var method: String
    /// The path without the query, percent-decoded.
    public var path: String
    /// The path as sent, still percent-encoded (so a `%2F` inside a segment can be told from a `/`).
    public var encodedPath: String
    /// The query parameters.
    public var query: [String: String]
    /// The headers (names lowercased).
    public var headers: [String: String]
    /// The body (bounded by the endpoint's limit).
    public var body: [UInt8]

    /// A request (the endpoint makes them; tests and other routers may too).
    public init(method: String, path: String, encodedPath: String? = nil, query: [String: String] = [:], headers: [String: String] = [:],
                body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.encodedPath = encodedPath ?? path
        self.query = query
        self.headers = headers
        self.body = body
    }
}

/// The worker's small HTTP server (metrics, health, admin), on SwiftNIO.
///
/// The router is an async function from request to reply; bodies over `maximumBodyBytes` get 413, requests
/// the router does not know get what it says (usually 404).
public final class HTTPEndpoint: Sendable {
    /// Answers a request.
    public typealias Router = @Sendable (HTTPRequest) async -> HTTPReply

    private let channel: any Channel
    /// The port it listens on (useful when it was started on port 0).
    public let port: Int

    private init(channel: any Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    /// Starts listening on `host`:`port` (0 picks a free port).
    public static func start(host: String, port: Int, maximumBodyBytes: Int = 1 << 20, logger: Logger,
                             router: @escaping Router) async throws -> HTTPEndpoint {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(RequestHandler(router: router, maximumBodyBytes: maximumBodyBytes, logger: logger))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        return HTTPEndpoint(channel: channel, port: channel.localAddress?.port ?? port)
    }

    /// Stops listening.
    public func stop() async {
        try? await channel.close()
    }
}

private final class RequestHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let router: HTTPEndpoint.Router
    let maximumBodyBytes: Int
    let logger: Logger
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(router: @escaping HTTPEndpoint.Router, maximumBodyBytes: Int, logger: Logger) {
        self.router = router
        self.maximumBodyBytes = maximumBodyBytes
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            tooLarge = false
        case .body(var buffer):
            if body.count + buffer.readableBytes > maximumBodyBytes {
                tooLarge = true
            } else if let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            if tooLarge {
                write(.text(413, "request body too large\n"), keepAlive: keepAlive, version: head.version, context: context)
                return
            }
            let components = URLComponents(string: head.uri)
            var query: [String: String] = [:]
            for item in components?.queryItems ?? [] { query[item.name] = item.value ?? "" }
            var headers: [String: String] = [:]
            for (name, value) in head.headers { headers[name.lowercased()] = value }
            let request = HTTPRequest(method: head.method.rawValue, path: components?.path ?? head.uri,
                                      encodedPath: components?.percentEncodedPath ?? head.uri, query: query, headers: headers, body: body)
            let router = self.router
            let loop = context.eventLoop
            let boundContext = NIOLoopBound(context, eventLoop: loop)
            let handler = NIOLoopBound(self, eventLoop: loop)
            Task {
                let reply = await router(request)
                loop.execute {
                    handler.value.write(reply, keepAlive: keepAlive, version: head.version, context: boundContext.value)
                }
            }
        }
    }

    private func write(_ reply: HTTPReply, keepAlive: Bool, version: HTTPVersion, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: reply.contentType)
        headers.add(name: "Content-Length", value: String(reply.body.count))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        for (name, value) in reply.headers.sorted(by: { $0.key < $1.key }) { headers.add(name: name, value: value) }
        let status = HTTPResponseStatus(statusCode: reply.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: reply.body.count)
        buffer.writeBytes(reply.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
