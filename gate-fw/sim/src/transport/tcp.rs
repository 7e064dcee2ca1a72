//! Raw TCP: one persistent connection per gate; the core's frames are written as they
//! come, the hub's are cut from the stream with a [`FrameDecoder`]. A framing error
//! (a length the decoder refuses) closes the connection, as the hub does.

use super::{LinkEvent, RECONNECT};
use gatehouse_gate_proto::{FrameDecoder, MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Why a connection ended.
enum Ended {
    /// The gate is gone: stop.
    Stop,
    /// The connection failed: report it and reconnect.
    Lost,
}

pub async fn run(
    addr: String,
    mut out: UnboundedReceiver<Vec<u8>>,
    events: UnboundedSender<LinkEvent>,
) {
    loop {
        match TcpStream::connect(&addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                // Frames queued before this connection belong to the old link.
                while out.try_recv().is_ok() {}
                if events.send(LinkEvent::Up).is_err() {
                    return;
                }
                match serve(stream, &mut out, &events).await {
                    Ended::Stop => return,
                    Ended::Lost => {
                        let _ = events.send(LinkEvent::IoError);
                        if events.send(LinkEvent::Down).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(_) => {
                if events.send(LinkEvent::IoError).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn serve(
    stream: TcpStream,
    out: &mut UnboundedReceiver<Vec<u8>>,
    events: &UnboundedSender<LinkEvent>,
) -> Ended {
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    loop {
        tokio::select! {
            n = rd.read(decoder.spare_mut()) => match n {
                Ok(0) | Err(_) => return Ended::Lost,
                Ok(n) => {
                    decoder.commit(n);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => {
                                let bytes = frame.into_inner().to_vec();
                                if events.send(LinkEvent::Frame(bytes)).is_err() {
                                    return Ended::Stop;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return Ended::Lost,
                        }
                    }
                }
            },
            frame = out.recv() => match frame {
                Some(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        return Ended::Lost;
                    }
                }
                None => return Ended::Stop,
            },
        }
    }
}
