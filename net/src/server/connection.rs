//! One client connection: a reader that splits frames and decodes
//! requests, a dispatcher that runs many requests at once (answers go out
//! in completion order, each carrying its request's id), and a writer that
//! drains the bounded outbound queue.
//!
//! Every future of a connection is polled inside the connection's own
//! future (no detached tasks), so dropping it, when the client goes or
//! the server stops, ends all its requests and watches at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future::{or, pending};
use futures_lite::{AsyncRead, AsyncReadExt, StreamExt};
use futures_util::stream::FuturesUnordered;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use keel_proto::{
    decode_request, encode_response_frame_within, DecodeError, ErrorBody, ErrorCode, Frame,
    FrameDecoder, FrameError, Request, Response, ResponseBody, MAX_FRAME_LEN,
    MAX_RESPONSE_FRAME_LEN,
};

use crate::server::answers::{AnswerRoom, AnswerSize, ConnectionAnswers};
use crate::server::budget::Reservation;
use crate::server::core::CoreContext;
use crate::server::outbound::{Closed, Outbound};
use crate::server::watch::WatchCommand;

/// Bytes asked of the socket per read of a frame under way.
const READ_CHUNK: usize = 64 << 10;

/// Bytes asked of the socket per read between frames: enough for many
/// small requests, and all a connection holds while its next large frame
/// waits for the budget.
const SMALL_READ: usize = 16 << 10;

/// Requests decoded and not yet taken by the dispatcher.
const DECODED_QUEUE: usize = 64;

pub(crate) struct Connection {
    pub(crate) ctx: Rc<CoreContext>,
    /// Room for answers, reserved before each request runs.
    pub(crate) answers: ConnectionAnswers,
    /// Shared with the watch groups that send to this connection.
    pub(crate) outbound: Rc<Outbound>,
    /// This connection's live watches, by id.
    pub(crate) watches: RefCell<HashMap<u64, Rc<flume::Sender<WatchCommand>>>>,
    /// Requests in flight that are not watches.
    requests_in_flight: Cell<usize>,
    /// Who the connection's requests come from (`UseToken`, or the
    /// client certificate's common name); checked when auth is on.
    pub(crate) identity: RefCell<crate::auth::Identity>,
    /// What the identity was admitted as, while it holds (`permits.rs`).
    pub(crate) admitted: RefCell<Option<crate::server::permits::Admitted>>,
}

impl Connection {
    /// Queues a response, replacing one too large for a frame with an
    /// error that says so. It is encoded before the wait for room, so the
    /// future that waits holds only its frame.
    pub(crate) fn respond(
        &self,
        response: Response,
    ) -> impl Future<Output = Result<(), Closed>> + '_ {
        let frame = response_frame(&response);
        async move { self.outbound.push(frame.ok_or(Closed)?).await }
    }

    /// Queues the answer to a request that reserved `room` before it ran,
    /// a heavy one in its turn (`heavy_answers.rs`). An answer larger than
    /// its room is replaced by an error that says so.
    pub(crate) async fn respond_in(
        &self,
        response: Response,
        room: AnswerRoom,
    ) -> Result<(), Closed> {
        let limit = room.frame_limit();
        let _turn = self.ctx.heavy_answers.turn_for(&response.body, limit).await;
        let frame = response_frame_within(&response, limit).ok_or(Closed)?;
        self.outbound.push_answer(frame, room)
    }

    pub(crate) async fn respond_error(
        &self,
        id: u64,
        code: ErrorCode,
        message: String,
    ) -> Result<(), Closed> {
        self.respond(error_response(id, code, message)).await
    }
}

/// `response` framed, or a refusal that says it is too large.
fn response_frame(response: &Response) -> Option<Frame> {
    response_frame_within(response, MAX_RESPONSE_FRAME_LEN)
}

/// `response` framed in at most `limit` bytes, or a refusal that says it
/// is too large.
fn response_frame_within(response: &Response, limit: usize) -> Option<Frame> {
    match encode_response_frame_within(response, limit) {
        Ok(frame) => Some(frame),
        Err(error) => {
            // A write's answer comes after the write is applied: say so,
            // so that the client does not take the write for failed.
            let message = match response.body {
                ResponseBody::Put(_) | ResponseBody::DeleteRange(_) | ResponseBody::Txn(_) => {
                    format!(
                        "the write was applied at revision {}, but its answer is too large \
                         ({error}); ask without prev_kv or reads to learn what it replaced",
                        response.revision
                    )
                }
                _ => format!("the answer is too large ({error}); ask for less, e.g. with a limit"),
            };
            let refusal = error_response(response.id, ErrorCode::TooLarge, message);
            encode_response_frame_within(&refusal, limit.max(1 << 10)).ok()
        }
    }
}

pub(crate) fn error_response(id: u64, code: ErrorCode, message: String) -> Response {
    Response {
        id,
        revision: 0,
        body: ResponseBody::Error(ErrorBody {
            code,
            message,
            revision: 0,
            leader: 0,
        }),
    }
}

/// Serves one client until it leaves, breaks the protocol, stops reading,
/// or the server stops (which drops this future).
pub(crate) async fn serve<S>(stream: S, ctx: Rc<CoreContext>, identity: crate::auth::Identity)
where
    S: AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let limits = ctx.limits;
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let connection = Connection {
        answers: ConnectionAnswers::new(limits.outbound_bytes, ctx.answers.clone()),
        ctx,
        outbound: Rc::new(Outbound::new(limits.outbound_bytes, limits.stall_timeout)),
        watches: RefCell::new(HashMap::new()),
        requests_in_flight: Cell::new(0),
        identity: RefCell::new(identity),
        admitted: RefCell::new(None),
    };
    let work = async {
        let (decoded, requests) = local_channel::new_bounded(DECODED_QUEUE);
        let violation = or(read_requests(&mut reader, &connection, decoded), async {
            dispatch(&connection, requests).await;
            None
        })
        .await;
        if let Some(refusal) = violation {
            // The stream cannot be resynchronised: say why, then close.
            let _ = connection.respond(refusal).await;
        }
        connection.outbound.close();
        // The writer sends what is queued; a client that does not take it
        // within the stall timeout is cut off.
        glommio::timer::sleep(limits.stall_timeout).await;
    };
    or(work, connection.outbound.write_to(&mut writer)).await;
}

/// A decoded request, with its bytes of the core's budget.
type Decoded = (u64, Request, Reservation);

/// Reads frames and decodes them. Returns the refusal to send before
/// closing when the client broke the protocol or sent a frame too slowly,
/// `None` when it left.
///
/// Every frame's announced length is reserved from the core's budget
/// (`budget.rs`) before its body is read or it is decoded, and the
/// reservation goes with the request until it is answered. A frame whose
/// length has come must be whole within `frame_timeout`.
async fn read_requests(
    reader: &mut (impl AsyncRead + Unpin),
    connection: &Connection,
    decoded: LocalSender<Decoded>,
) -> Option<Response> {
    let budget = connection.ctx.inbound.clone();
    let frame_timeout = connection.ctx.limits.frame_timeout;
    let mut frames = FrameDecoder::new();
    // The frame under way: its reservation and its deadline.
    let mut held: Option<Reservation> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        loop {
            // Reserve the next frame's bytes (the frame's body may be here
            // already: reading stops until the budget has room for it).
            // (A length past the limit is refused below, not reserved.)
            let announced = frames.announced().filter(|len| *len <= MAX_FRAME_LEN);
            if let (Some(len), None, true) = (announced, held.as_ref(), frames.next_is_whole()) {
                // Already read whole: counted, never waited for, so a
                // client's small requests are not held up behind other
                // clients' large frames.
                held = Some(budget.take(len));
            }
            if let (Some(len), None) = (announced, held.as_ref()) {
                let due = *deadline.get_or_insert_with(|| Instant::now() + frame_timeout);
                let reserved = or(async { Some(budget.reserve(len).await) }, async {
                    glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
                    None
                })
                .await;
                match reserved {
                    // Room that came too late is not used: the frame's
                    // bytes are not read past its deadline.
                    Some(reservation) if Instant::now() < due => {
                        held = Some(reservation);
                        frames.make_room_for_next();
                    }
                    _ => return Some(too_slow(frame_timeout)),
                }
            }
            let frame = match frames.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    let code = match error {
                        FrameError::TooLarge { .. } => ErrorCode::TooLarge,
                        _ => ErrorCode::BadRequest,
                    };
                    tracing::debug!(%error, "closing a connection after a bad frame");
                    return Some(error_response(0, code, error.to_string()));
                }
            };
            deadline = None;
            // Reserved above: its length had come.
            let reservation = held.take()?;
            match decode_request(&frame) {
                Ok((id, request)) => {
                    drop(frame);
                    if decoded.send((id, request, reservation)).await.is_err() {
                        return None;
                    }
                }
                // Well framed and verified, but meaningless: answer it.
                Err(DecodeError {
                    id: Some(id),
                    message,
                }) => {
                    let refused = connection
                        .respond_error(id, ErrorCode::BadRequest, message)
                        .await;
                    if refused.is_err() {
                        return None;
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "closing a connection after a malformed message");
                    let message = format!("malformed message: {error}");
                    return Some(error_response(0, ErrorCode::BadRequest, message));
                }
            }
        }
        // A large frame under way (its bytes reserved above) is read into
        // the room made for it, no further: its buffer was sized once.
        let wanted = match (frames.announced(), frames.rest_of_next()) {
            (Some(len), Some(rest)) if len > SMALL_READ => rest.clamp(1, READ_CHUNK),
            _ => SMALL_READ,
        };
        let room = frames.read_room(wanted);
        // A frame under way must be whole by its deadline; between frames
        // a connection may wait as long as it likes.
        let read = match deadline {
            // A read that is ready wins the race below however late it
            // is, so a frame past its deadline is neither read further nor
            // finished by what a late read brought (when many are cut off
            // together, the next ones to get the budget would each read
            // megabytes for nothing).
            Some(due) if Instant::now() >= due => return Some(too_slow(frame_timeout)),
            Some(due) => {
                let timed = or(async { Some(reader.read(room).await) }, async {
                    glommio::timer::sleep(due.saturating_duration_since(Instant::now())).await;
                    None
                })
                .await;
                match timed {
                    Some(read) if Instant::now() < due => read,
                    _ => return Some(too_slow(frame_timeout)),
                }
            }
            None => read_unless_idle(reader, room, connection).await?,
        };
        let read = match read {
            Ok(0) | Err(_) => return None,
            Ok(read) => read,
        };
        frames.filled(read);
        if frames.announced().is_some() && deadline.is_none() {
            deadline = Some(Instant::now() + frame_timeout);
        }
    }
}

/// Reads between frames. With an idle timeout, a connection that has sent
/// nothing for that long while it had no request in flight, no watch and
/// nothing left to write is closed (`None`).
async fn read_unless_idle(
    reader: &mut (impl AsyncRead + Unpin),
    chunk: &mut [u8],
    connection: &Connection,
) -> Option<std::io::Result<usize>> {
    let Some(idle_timeout) = connection.ctx.limits.idle_timeout else {
        return Some(reader.read(chunk).await);
    };
    let mut read = Box::pin(reader.read(chunk));
    loop {
        let timed = or(async { Some((&mut read).await) }, async {
            glommio::timer::sleep(idle_timeout).await;
            None
        })
        .await;
        if let Some(read) = timed {
            return Some(read);
        }
        let busy = connection.requests_in_flight.get() > 0
            || !connection.watches.borrow().is_empty()
            || connection.outbound.holds_any();
        if !busy {
            tracing::debug!("closing a connection idle for its idle timeout");
            return None;
        }
    }
}

/// The refusal for a frame that did not arrive in time.
fn too_slow(frame_timeout: std::time::Duration) -> Response {
    tracing::debug!("closing a connection whose frame did not arrive in time");
    let message = format!(
        "a request frame did not arrive within {} ms of its length",
        frame_timeout.as_millis()
    );
    error_response(0, ErrorCode::BadRequest, message)
}

type InFlight<'a> = Pin<Box<dyn Future<Output = Result<(), Closed>> + 'a>>;

/// Runs decoded requests concurrently, at most `max_in_flight` at once
/// (watches apart: they live on, and count against `max_watches`, so
/// that however many a connection holds, its other requests, cancels
/// included, are still read); each holds its bytes of the core's budget
/// until it is answered (a watch gives them back as it starts: its
/// request is small).
async fn dispatch(connection: &Connection, requests: LocalReceiver<Decoded>) {
    enum Step {
        Arrived(Decoded),
        Finished(Result<(), Closed>),
        ReaderGone,
    }
    let limits = connection.ctx.limits;
    let mut in_flight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
    loop {
        let in_flight_count = &connection.requests_in_flight;
        let room = in_flight_count.get() < limits.max_in_flight;
        let arrived = async {
            if !room {
                return pending().await;
            }
            match requests.recv().await {
                Some(request) => Step::Arrived(request),
                None => Step::ReaderGone,
            }
        };
        let finished = async {
            match in_flight.next().await {
                Some(result) => Step::Finished(result),
                None => pending().await,
            }
        };
        match or(arrived, finished).await {
            Step::Arrived((id, Request::UseToken { token }, _)) => {
                // Taken before any later request of the connection runs.
                let answer = use_token(connection, id, token);
                in_flight.push(Box::pin(connection.respond(answer)));
            }
            Step::Arrived((id, request, reservation)) => {
                let watch = matches!(request, Request::WatchCreate(_));
                if watch && connection.watches.borrow().len() >= limits.max_watches {
                    let message = format!(
                        "this connection has {} watches, the most it may (max_watches); \
                         cancel some or open another connection",
                        limits.max_watches
                    );
                    let refused = connection.respond_error(id, ErrorCode::BadRequest, message);
                    in_flight.push(Box::pin(refused));
                    continue;
                }
                let held = (!watch).then_some(reservation);
                if !watch {
                    in_flight_count.set(in_flight_count.get() + 1);
                }
                // With auth on, what the connection's user may not do is
                // refused here, as it arrives, before anything runs.
                let checked = crate::server::permits::check_at_arrival(connection, &request);
                in_flight.push(Box::pin(async move {
                    let checked = match checked {
                        Ok(Some(pending)) => {
                            crate::server::permits::check_pending(connection, pending).await
                        }
                        Ok(None) => Ok(()),
                        Err(refusal) => Err(refusal.into()),
                    };
                    let answered = match (checked, request) {
                        (Err(refusal), _) => connection.respond(refusal.response(id)).await,
                        (Ok(()), Request::WatchCreate(create)) => {
                            crate::server::watch::run(connection, id, create).await
                        }
                        (Ok(()), request) => {
                            // Room for the answer first: nothing is
                            // gathered that the connection could not hold.
                            let room = connection.answers.reserve(AnswerSize::of(&request)).await;
                            crate::server::dispatch::handle(connection, id, request, room).await
                        }
                    };
                    drop(held);
                    if !watch {
                        let count = &connection.requests_in_flight;
                        count.set(count.get().saturating_sub(1));
                    }
                    answered
                }));
            }
            Step::Finished(Ok(())) => {}
            Step::Finished(Err(Closed)) | Step::ReaderGone => return,
        }
    }
}

/// Takes `token` as the connection's user if it is valid now (with auth
/// off, any token is taken: it is checked once auth is on).
fn use_token(connection: &Connection, id: u64, token: String) -> Response {
    let compiled = connection.ctx.auth.current();
    let identity = crate::auth::Identity::Token(token);
    if let Err(refused) = compiled.admit(identity.credential()) {
        let code = crate::server::permits::error_code(&refused);
        return error_response(id, code, refused.to_string());
    }
    *connection.identity.borrow_mut() = identity;
    *connection.admitted.borrow_mut() = None;
    Response {
        id,
        revision: 0,
        body: keel_proto::ResponseBody::UseToken,
    }
}
